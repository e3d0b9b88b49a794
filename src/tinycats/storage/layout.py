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
MAX_NAME = 128
"""Longest run id or task name: a folder name, plus the suffixes of its temporary files,
must stay under the 255 bytes a file name may have."""


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def parse_step(name: str) -> int | None:
    """The step of a completed folder name (`step_00000042` → 42); None for anything else."""
    match = STEP_RE.match(name)
    return int(match.group(1)) if match else None


def check_name(kind: str, value: str) -> str:
    """`value` if it is safe as one path component (no separators, no '..'), else an error."""
    if not NAME_RE.match(value) or value in (".", "..") or len(value) > MAX_NAME:
        shown = value if len(value) <= 40 else f"{value[:20]}...({len(value)} characters)"
        raise CheckpointError(
            f"invalid {kind} {shown!r}; use up to {MAX_NAME} letters, digits, '-', '_' and "
            "'.', starting with a letter or digit"
        )
    return value


def utc_date() -> str:
    """Today's date as the run folder's date component."""
    return datetime.now(UTC).strftime("%Y-%m-%d")


def run_dir_path(store: Store, task: str, date: str, run_id: str) -> Path:
    return store.root / CHECKPOINTS_DIR / task / date / run_id


def is_dir(path: Path | str) -> bool:
    """Whether `path` is a folder; False (not an error) for a name too long to exist."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def checked_run_dir(path: Path | str) -> Path:
    """A folder the user named as a run folder, if it is laid out as one
    (`checkpoints/<task>/<date>/<run_id>`); else a CheckpointError saying what to pass."""
    resolved = Path(path).resolve()
    if len(resolved.parents) < 4 or resolved.parents[2].name != CHECKPOINTS_DIR:
        raise CheckpointError(
            f"{path} is not a run folder (checkpoints/<task>/<date>/<run_id>); pass a run "
            "id (see `tinycats ckpt ls`) or a run folder"
        )
    return resolved


def find_run_dir(store: Store, run_id: str, task: str | None = None) -> Path | None:
    """The run's folder `checkpoints/<task>/<date>/<run_id>/`, whatever its date; None if
    absent (or if `run_id` cannot be one: a path or a name too long)."""
    if not NAME_RE.match(run_id) or len(run_id) > MAX_NAME:
        return None
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
