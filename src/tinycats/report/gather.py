"""Everything a report says about one run, read from a Store (and only read: no writes).

The run record (status, attempts, evaluations, versions), the metrics log, the
checkpoints with the retention rules that keep each, the evaluation reports written by
`tinycats eval` (per-class accuracy, confusion matrix), the preview grids written at
checkpoints, and the resolved config against today's defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinycats.storage import CheckpointManager, RunRegistry, Store
from tinycats.storage.atomic import read_json
from tinycats.storage.manifest import read_meta
from tinycats.storage.metrics_log import run_metrics

GRID_RE = re.compile(r"^step_(\d+)\.png$")
EVAL_RE = re.compile(r"^eval_([A-Za-z0-9_-]+)\.json$")


@dataclass
class CheckpointRow:
    step: int
    time: float
    size_bytes: int
    sha256: str  # of the model weights
    metrics: dict[str, float]
    kept_by: list[str]


@dataclass
class RunFacts:
    """What the report shows of one run."""

    record: dict[str, Any]
    lines: list[dict[str, Any]]
    checkpoints: list[CheckpointRow] = field(default_factory=list)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> eval report
    grids: list[tuple[int, Path]] = field(default_factory=list)  # preview grid per step
    config_changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # key, default, run

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def task(self) -> str:
        return self.record.get("task", "?")


def gather(store: Store, run_id: str) -> RunFacts:
    """The facts of `run_id`; a one-line TinycatsError for an unknown run or one with no
    metrics yet (its first checkpoint writes them)."""
    record = RunRegistry(store).get(run_id)
    task = record.get("task")
    return RunFacts(
        record=record,
        lines=run_metrics(store, run_id, task),
        checkpoints=_checkpoints(store, record),
        evals=_eval_reports(store.root / "reports" / run_id),
        grids=_grids(store.root / "samples" / run_id),
        config_changes=config_changes(task, record.get("config") or {}),
    )


def _checkpoints(store: Store, record: dict[str, Any]) -> list[CheckpointRow]:
    from tinycats.config import validate_config

    config = validate_config(record["config"])
    manager = CheckpointManager.from_config(store, config.task, record["run_id"], config)
    infos = manager.list()
    reasons = manager.keep_reasons(infos)
    rows = []
    for info in infos:
        files = read_meta(info.path)["files"]
        model = files.get("model.safetensors", {})
        rows.append(
            CheckpointRow(
                step=info.step,
                time=info.time,
                size_bytes=sum(int(f.get("size", 0)) for f in files.values()),
                sha256=str(model.get("sha256", "")),
                metrics=info.metrics,
                kept_by=reasons.get(info.step, []),
            )
        )
    return rows


def _eval_reports(folder: Path) -> dict[str, dict[str, Any]]:
    """`tinycats eval`'s reports of the run, by split."""
    found = {}
    for path in sorted(folder.glob("eval_*.json")):
        match = EVAL_RE.match(path.name)
        if match:
            try:
                found[match.group(1)] = read_json(path)
            except (OSError, ValueError):
                continue  # a report being rewritten; the record still has its figures
    return found


def _grids(folder: Path) -> list[tuple[int, Path]]:
    """The preview grids written at checkpoints, by step."""
    grids = []
    for path in folder.glob("step_*.png"):
        match = GRID_RE.match(path.name)
        if match:
            grids.append((int(match.group(1)), path))
    return sorted(grids)


def config_changes(task: str | None, config: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, default, the run's value) wherever the run's config differs from the
    task's defaults."""
    from tinycats.config import build_config, flatten

    if not task or not config:
        return []
    defaults = flatten(build_config(task).to_dict())
    values = flatten(config)
    return [
        (key, defaults.get(key), value)
        for key, value in sorted(values.items())
        if defaults.get(key) != value
    ]
