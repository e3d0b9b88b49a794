"""Which run a `train` call continues, and the config it was started with.

Resume by convention: a run that has not completed is continued, never restarted
from zero, unless the user asks for a fresh run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinycats.errors import ConfigError
from tinycats.storage import CheckpointManager, RunRegistry, Store, find_run_dir, new_run_id

RESUME_MODES = ("auto", "never")


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    saved_config: dict[str, Any] | None  # None: a fresh run
    reason: str


def _has_checkpoint(store: Store, task: str, run_id: str) -> bool:
    if find_run_dir(store, run_id, task) is None:
        return False
    return CheckpointManager(store, task, run_id).latest() is not None


def _saved_config(registry: RunRegistry, run_id: str) -> dict[str, Any] | None:
    try:
        return registry.get(run_id).get("config")
    except Exception:
        return None


def plan_run(store: Store, task: str, run_id: str | None, resume: str) -> RunPlan:
    """Apply the --run-id / --resume rules (see `tinycats train --help`)."""
    registry = RunRegistry(store)
    known = {r["run_id"]: r for r in registry.list()}
    if resume == "never":
        if run_id and (run_id in known or find_run_dir(store, run_id, task)):
            raise ConfigError(
                f"run {run_id!r} already exists; pass --resume auto to continue it "
                "or choose another --run-id"
            )
        return RunPlan(run_id or new_run_id(task), None, "new run")
    if resume != "auto":
        if run_id and run_id != resume:
            raise ConfigError(f"--run-id {run_id!r} and --resume {resume!r} name different runs")
        if resume not in known and find_run_dir(store, resume, task) is None:
            raise ConfigError(
                f"no run {resume!r} for task {task!r} under {store.root}; "
                "see `tinycats runs ls` or pass --resume never"
            )
        return RunPlan(resume, _saved_config(registry, resume), f"resuming {resume}")
    if run_id:
        if _has_checkpoint(store, task, run_id):
            return RunPlan(run_id, _saved_config(registry, run_id), f"resuming {run_id}")
        return RunPlan(run_id, None, "new run")
    unfinished = [
        r
        for r in registry.list()  # newest first
        if r.get("task") == task
        and r.get("status") != "completed"
        and _has_checkpoint(store, task, r["run_id"])
    ]
    if unfinished:
        run = unfinished[0]
        return RunPlan(
            run["run_id"],
            run.get("config"),
            f"resuming unfinished run {run['run_id']} ({run.get('status')}); "
            "pass --resume never to start fresh",
        )
    return RunPlan(new_run_id(task), None, "new run")
