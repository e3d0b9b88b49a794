"""The run registry: one JSON record per run, and an index derived from them.

Each run owns `runs/<run_id>.json` (resolved config, status, times, attempts,
metrics summary, best checkpoint, versions, host/GPU), so concurrent runs never
write the same file. `metadata/training_runs.json` is only a summary rebuilt from
`runs/`: losing or racing on it loses nothing, the next rebuild restores it.

Read-modify-write of a record and the index rebuild happen under an advisory
lock (`runs/.lock`, POSIX flock), so processes sharing a local Store never lose
an update. Across Modal containers the lock has no effect; there each run is
written by one container at a time, which is what makes one file per run safe.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tinycats.errors import TinycatsError
from tinycats.storage.atomic import read_json, write_json_atomic
from tinycats.storage.store import Store

try:
    import fcntl
except ImportError:  # Windows: no flock; single-process use only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RUNS_DIR = "runs"
INDEX_FILE = Path("metadata") / "training_runs.json"
LOCK_FILE = ".lock"
FINAL_STATUSES = ("completed", "failed", "preempted")
INDEX_FIELDS = (
    "run_id",
    "task",
    "status",
    "attempts",
    "started_at",
    "ended_at",
    "step",
    "metrics",
    "best_checkpoint",
)
"""What the index keeps of each record (the full record, with its config, stays in runs/)."""


def new_run_id(task: str) -> str:
    """A sortable, unique id such as `classifier-20261123-133100-a1b2` (UTC time + random)."""
    return f"{task}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the tinycats source tree, when it is a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _gpu_name() -> str | None:
    if "torch" not in sys.modules:  # never pay torch's import just to say "no GPU"
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def environment() -> dict[str, Any]:
    """Where and with what a run attempt executes."""
    return {
        "versions": {
            "tinycats": _version("tinycats"),
            "torch": _version("torch"),
            "python": platform.python_version(),
        },
        "git_commit": _git_commit(),
        "host": socket.gethostname(),
        "gpu": _gpu_name(),
    }


class RunRegistry:
    """Records of the runs in one Store: start, update, finish, get, list, index."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runs_dir = store.root / RUNS_DIR
        self.index_path = store.root / INDEX_FILE

    def _path(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise TinycatsError(f"invalid run id {run_id!r}; see `tinycats runs ls` for run ids")
        return self.runs_dir / f"{run_id}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write across processes on this machine."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.runs_dir / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, record: dict[str, Any]) -> None:
        write_json_atomic(self._path(record["run_id"]), record)

    def start(self, run_id: str, task: str, config: dict[str, Any]) -> dict[str, Any]:
        """Record a new run, or a new attempt of an existing one (a resume): attempts += 1."""
        path = self._path(run_id)
        with self._locked():
            now = _now()
            if path.exists():
                record = self.get(run_id)
                record.setdefault("history", []).append(
                    {
                        k: record.get(k)
                        for k in ("attempts", "attempt_started_at", "ended_at", "status", "host")
                    }
                )
                record["attempts"] = int(record.get("attempts", 0)) + 1
                record.pop("ended_at", None)
            else:
                record = {"run_id": run_id, "started_at": now, "attempts": 1, "history": []}
            record.update(
                task=task,
                status="running",
                attempt_started_at=now,
                updated_at=now,
                config=config,
                **environment(),
            )
            self._write(record)
            self._rebuild_index_locked()
        self.store.commit()
        return record

    def update(self, run_id: str, *, publish: bool = True, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into the record (dict values merge one level deep) and write it;
        `publish=False` leaves the commit to the caller (one commit per checkpoint)."""
        with self._locked():
            record = self.get(run_id)
            for key, value in fields.items():
                old = record.get(key)
                record[key] = (
                    {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
                )
            record["updated_at"] = _now()
            self._write(record)
        if publish:
            self.store.commit()
        return record

    def finish(self, run_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Close the current attempt with a final status, then rebuild the index."""
        if status not in FINAL_STATUSES:
            raise TinycatsError(
                f"run status {status!r} is not final; choose one of {', '.join(FINAL_STATUSES)}"
            )
        record = self.update(run_id, status=status, ended_at=_now(), **fields)
        self.rebuild_index()
        return record

    def get(self, run_id: str) -> dict[str, Any]:
        """One run's record; TinycatsError naming the fix when it does not exist."""
        path = self._path(run_id)
        try:
            record = read_json(path)
        except FileNotFoundError:
            raise TinycatsError(
                f"unknown run {run_id!r} in {self.runs_dir}; see `tinycats runs ls` or pass --out"
            ) from None
        except ValueError as err:
            raise TinycatsError(
                f"run record {path} is not valid JSON ({err}); restore it"
            ) from None
        return record

    def list(self) -> list[dict[str, Any]]:
        """Every readable run record, newest first."""
        records = []
        for path in self.runs_dir.glob("*.json"):
            try:
                records.append(read_json(path))
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable run record %s (%s)", path, err)
        records.sort(key=lambda r: (r.get("started_at", ""), r.get("run_id", "")), reverse=True)
        return records

    def rebuild_index(self) -> Path:
        """Write `metadata/training_runs.json` from `runs/*.json` (atomic) and publish it."""
        with self._locked():
            path = self._rebuild_index_locked()
        self.store.commit()
        return path

    def _rebuild_index_locked(self) -> Path:
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        summaries = [{k: r.get(k) for k in INDEX_FIELDS} for r in self.list()]
        write_json_atomic(self.index_path, {"updated_at": _now(), "runs": summaries})
        return self.index_path
