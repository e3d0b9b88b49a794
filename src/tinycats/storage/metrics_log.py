"""A run's metrics log: one JSON line per logged step or evaluation, beside its checkpoints.

    checkpoints/<task>/<YYYY-MM-DD>/<run_id>/metrics.jsonl

Lines are appended only when the checkpoint that covers them is written (the engine
appends, fsyncs and closes the file just before it submits the save, so the save's one
commit publishes them), and a resumed run first cuts the log back to the step it
resumed from. A SIGKILL between two checkpoints therefore leaves lines that the resume
removes and the resumed run writes again: no step twice, none missing. A torn last
line (a kill in the middle of an append) is ignored by readers and removed by the cut.

The file is never held open between appends: on a Modal volume a commit is refused
while any file under the mount is open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinycats.errors import StorageError, TinycatsError
from tinycats.storage.atomic import disk_full_as_storage_error, write_bytes_atomic
from tinycats.storage.layout import find_run_dir
from tinycats.storage.store import Store

METRICS_FILE = "metrics.jsonl"

TRAIN_KIND = "train"
EVAL_KIND = "eval"


class MetricsLog:
    """The append-only JSON-lines log at `path` (one dict per line, each with `step` and `kind`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of_run(cls, store: Store, run_id: str, task: str | None = None) -> MetricsLog | None:
        """The log of `run_id` in `store`, or None when the run has no checkpoint folder."""
        run_dir = find_run_dir(store, run_id, task)
        return None if run_dir is None else cls(run_dir / METRICS_FILE)

    def append(self, lines: Iterable[dict[str, Any]]) -> None:
        """Append `lines` and make them durable (fsync), then close the file."""
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        if not text:
            return
        with disk_full_as_storage_error(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete line, in file order; a torn or foreign line is skipped."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise StorageError(f"cannot read {self.path} ({err}); check its permissions") from None
        lines = []
        for chunk in raw.split(b"\n"):
            try:
                line = json.loads(chunk)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("step"), int):
                lines.append(line)
        return lines

    def cut_after(self, step: int) -> int:
        """Keep only the lines of steps <= `step` (what the resumed checkpoint covers), and
        drop a torn tail; rewritten atomically. Returns how many lines were removed."""
        if not self.path.exists():
            return 0
        raw = self.path.read_bytes()
        lines = self.read()
        kept = [line for line in lines if line["step"] <= step]
        removed = len(lines) - len(kept)
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in kept).encode()
        if text != raw:
            write_bytes_atomic(self.path, text)
        return removed


def run_metrics(store: Store, run_id: str, task: str | None = None) -> list[dict[str, Any]]:
    """The lines of a run's log; a one-line TinycatsError naming the fix when it has none."""
    log = MetricsLog.of_run(store, run_id, task)
    lines = log.read() if log is not None else []
    if not lines:
        raise TinycatsError(
            f"run {run_id!r} has no metrics yet (they are written with each checkpoint); "
            "wait for its first checkpoint, or train it with this tinycats version"
        )
    return lines


def series(lines: Iterable[dict[str, Any]], key: str, kind: str | None = None) -> list[tuple]:
    """[(step, value)] of `key` over the lines (of one `kind` when given), in step order."""
    points = [
        (line["step"], line[key])
        for line in lines
        if key in line and (kind is None or line.get("kind") == kind)
    ]
    return sorted(points, key=lambda p: p[0])
