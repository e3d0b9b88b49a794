"""Which run a `train` call continues, the checkpoint it continues from, and its config.

Resume by convention: a run that has not completed is continued, never restarted
from zero, unless the user asks for a fresh run. The run is taken first (its local
lock, `storage.run_lock`) and planned under the lock, so a second process naming the
same run is refused before it prints anything, and a plan cannot go stale while it
is carried out.

The config a run resumes with is the one saved in the checkpoint it resumes from
(`meta.json`), never the run record, which may be missing, damaged or from another
attempt: a changed default cannot silently change a resumed run, and a checkpoint
without a readable config is a clear error rather than today's defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinycats.errors import CheckpointError, ConfigError
from tinycats.storage import (
    CheckpointManager,
    LoadedCheckpoint,
    RunRegistry,
    Store,
    find_run_dir,
    load_checkpoint,
    new_run_id,
)
from tinycats.storage.layout import check_name
from tinycats.storage.manifest import META_FILE
from tinycats.storage.run_lock import FencedStore, LocalRunLock, held

RESUME_MODES = ("auto", "never")
CLAIM_TRIES = 3
"""How often a run chosen by `--resume auto` may change under us before we give up."""


@dataclass(frozen=True)
class RunChoice:
    """Which run a `train` call writes, before anything is loaded."""

    run_id: str
    reason: str
    existing: bool  # the run has a committed checkpoint to continue from


@dataclass
class RunPlan:
    """A chosen run and the verified checkpoint it continues from (None: from step 0)."""

    run_id: str
    resume: LoadedCheckpoint | None
    reason: str

    @property
    def saved_config(self) -> dict[str, Any] | None:
        return None if self.resume is None else checkpoint_config(self.resume)

    def summary(self) -> dict[str, Any]:
        """What another rank of a data-parallel job needs to follow this plan (JSON)."""
        path = None if self.resume is None else str(self.resume.info.path)
        return {"run_id": self.run_id, "reason": self.reason, "resume": path}

    @classmethod
    def follow(cls, summary: dict[str, Any]) -> RunPlan:
        """Rank 0's plan on another rank: the same run, the same checkpoint loaded here."""
        path = summary["resume"]
        resume = None if path is None else load_checkpoint(Path(path))
        return cls(summary["run_id"], resume, summary["reason"])


def checkpoint_config(loaded: LoadedCheckpoint) -> dict[str, Any]:
    """The resolved config saved with a checkpoint; CheckpointError when it is unreadable."""
    config = loaded.meta.get("config")
    if not isinstance(config, dict) or config.get("task") != loaded.info.task:
        raise CheckpointError(
            f"{loaded.info.path / META_FILE} holds no readable run config, which a resume "
            "needs; restore that checkpoint from a backup or start a new --run-id"
        )
    return config


def _has_checkpoint(store: Store, task: str, run_id: str) -> bool:
    if find_run_dir(store, run_id, task) is None:
        return False
    return CheckpointManager(store, task, run_id).latest() is not None


def choose_run(
    store: Store, task: str, run_id: str | None, resume: str, fresh_id: str | None = None
) -> RunChoice:
    """Apply the --run-id / --resume rules (see `tinycats train --help`); `fresh_id` names
    a new run (default: a new id)."""
    if run_id is not None:
        check_name("run id", run_id)
    fresh = fresh_id or new_run_id(task)
    registry = RunRegistry(store)
    known = {r["run_id"]: r for r in registry.list()}
    named = run_id or (resume if resume not in RESUME_MODES else None)
    other_task = known.get(named, {}).get("task") if named else None
    if other_task not in (None, task):  # its record and checkpoints would be mixed up
        raise ConfigError(
            f"run {named!r} is a {other_task} run, not {task}; use `tinycats train "
            f"{other_task} --run-id {named}` or another --run-id"
        )
    if resume == "never":
        if run_id and (run_id in known or find_run_dir(store, run_id, task)):
            raise ConfigError(
                f"run {run_id!r} already exists; pass --resume auto to continue it "
                "or choose another --run-id"
            )
        return RunChoice(run_id or fresh, "new run", False)
    if resume != "auto":
        check_name("run id", resume)
        if run_id and run_id != resume:
            raise ConfigError(f"--run-id {run_id!r} and --resume {resume!r} name different runs")
        if resume not in known and find_run_dir(store, resume, task) is None:
            raise ConfigError(
                f"no run {resume!r} for task {task!r} under {store.root}; "
                "see `tinycats runs ls` or pass --resume never"
            )
        if _has_checkpoint(store, task, resume):
            return RunChoice(resume, f"resuming {resume}", True)
        return RunChoice(resume, f"restarting {resume} from step 0 (no checkpoint)", False)
    if run_id:
        if _has_checkpoint(store, task, run_id):
            return RunChoice(run_id, f"resuming {run_id}", True)
        return RunChoice(run_id, "new run", False)
    unfinished = [
        r
        for r in registry.list()  # newest first
        if r.get("task") == task
        and r.get("status") != "completed"
        and _has_checkpoint(store, task, r["run_id"])
    ]
    if unfinished:
        run = unfinished[0]
        return RunChoice(
            run["run_id"],
            f"resuming unfinished run {run['run_id']} ({run.get('status')}); "
            "pass --resume never to start fresh",
            True,
        )
    return RunChoice(fresh, "new run", False)


def plan_run(store: Store, task: str, choice: RunChoice) -> RunPlan:
    """Load the checkpoint the chosen run continues from (the newest that verifies)."""
    if not choice.existing:
        return RunPlan(choice.run_id, None, choice.reason)
    loaded = CheckpointManager(store, task, choice.run_id).load_latest()
    return RunPlan(choice.run_id, loaded, choice.reason)


@contextlib.contextmanager
def claim_run(
    store: Store, task: str, run_id: str | None, resume: str
) -> Iterator[tuple[RunPlan, Store]]:
    """Choose the run, hold its lock for the block, and plan it under the lock.

    Yields the plan and the Store to train into, whose commits check that the lock is
    still ours. A run another live process holds raises `RunBusy` naming it.
    """
    for _ in range(CLAIM_TRIES):
        choice = choose_run(store, task, run_id, resume)
        with held(LocalRunLock(store, choice.run_id)) as lock:
            # Chosen again under the lock: what existed may have changed before we held it.
            again = choose_run(store, task, run_id, resume, fresh_id=choice.run_id)
            if again.run_id == choice.run_id:
                yield plan_run(store, task, again), FencedStore(store, lock)
                return
    raise ConfigError(
        f"the run to resume kept changing under {store.root}; pass --run-id to name one"
    )
