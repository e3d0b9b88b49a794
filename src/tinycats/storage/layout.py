"""Where a run's checkpoints live, and how their names are read.

    checkpoints/<task>/<YYYY-MM-DD>/<run_id>/step_<8 digits>/   <name>.safetensors, train_state.pt, meta.json
    checkpoints/<task>/<YYYY-MM-DD>/<run_id>/latest.json        pointer to the newest published step
    checkpoints/<task>/<YYYY-MM-DD>/<run_id>/index.json         cache of each step's time and metrics

A folder counts as a checkpoint only under its final name `step_X` (parsed, never
text-sorted); `step_X.tmp-<uuid>` is a save in progress or a crashed writer's
leftover, `step_X.trash-<uuid>` a deletion in progress.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from tinycats.errors import CheckpointError
from tinycats.storage.atomic import read_json
from tinycats.storage.store import Store

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
INDEX_FILE = "index.json"
TRASH_MARK = ".trash-"
STEP_RE = re.compile(r"^step_(\d{8,})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def parse_step(name: str) -> int | None:
    """The step of a completed folder name (`step_00000042` → 42); None for anything else."""
    match = STEP_RE.match(name)
    return int(match.group(1)) if match else None


def check_name(kind: str, value: str) -> str:
    """`value` if it is safe as one path component (no separators, no '..'), else an error."""
    if not NAME_RE.match(value) or value in (".", ".."):
        raise CheckpointError(
            f"invalid {kind} {value!r}; use letters, digits, '-', '_' and '.' only"
        )
    return value


def utc_date() -> str:
    """Today's date as the run folder's date component."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def run_dir_path(store: Store, task: str, date: str, run_id: str) -> Path:
    return store.root / CHECKPOINTS_DIR / task / date / run_id


def find_run_dir(store: Store, run_id: str, task: str | None = None) -> Path | None:
    """The run's folder `checkpoints/<task>/<date>/<run_id>/`, whatever its date; None if absent."""
    base = store.root / CHECKPOINTS_DIR
    pattern = f"{task or '*'}/*/{run_id}"
    found = sorted(p for p in base.glob(pattern) if p.is_dir())
    return found[-1] if found else None


def all_run_dirs(store: Store) -> list[Path]:
    """Every run folder in the store, sorted by (task, date, run id)."""
    base = store.root / CHECKPOINTS_DIR
    return sorted(p for p in base.glob("*/*/*") if p.is_dir() and not p.name.startswith("."))


def run_dir_parts(run_dir: Path) -> tuple[Path, str, str]:
    """A run folder's (store root, task, run id), read from the layout."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parents[3], run_dir.parents[1].name, run_dir.name


def read_pointer(run_dir: Path) -> int | None:
    """The step `latest.json` points to, or None when absent or unreadable."""
    try:
        return int(read_json(Path(run_dir) / LATEST_FILE)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
