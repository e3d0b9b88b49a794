"""Write an export folder all at once: built beside its destination, then renamed in.

A failed or interrupted export never leaves half a folder where a good one was, and
never writes into a folder that holds something else.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from tinycats.errors import StorageError
from tinycats.storage.atomic import disk_full_as_storage_error


def write_folder(
    folder: Path, build: Callable[[Path], None], *, is_ours: Callable[[Path], bool], kind: str
) -> None:
    """Run `build(staging)` into a fresh sibling folder, then swap it in for `folder`.

    `folder` may be missing, empty, or an earlier export (`is_ours`); anything else is
    refused with one line, as are a path that is a file and an unwritable location.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"{folder} is a file; pass a folder path with -o")
    if folder.is_dir() and any(folder.iterdir()) and not is_ours(folder):
        raise StorageError(
            f"{folder} is not empty and not a {kind}; pass a new or empty folder with -o"
        )
    staging = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with disk_full_as_storage_error(folder):
            staging.mkdir(parents=True)
            build(staging)
            _readable_by_all(staging)
            _swap_in(staging, folder)
    except PermissionError as err:
        raise StorageError(
            f"cannot write {err.filename or folder} (permission denied); choose a writable -o"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _readable_by_all(root: Path) -> None:
    """An export is made to be shared or served (often by another user, e.g. a web
    server): some writers (safetensors) create their files private to the owner."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _swap_in(staging: Path, folder: Path) -> None:
    """The finished folder takes the name; an older export there is removed only afterwards."""
    old = None
    if folder.exists():
        old = folder.with_name(f"{folder.name}.trash-{uuid.uuid4().hex[:8]}")
        folder.rename(old)
    staging.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
