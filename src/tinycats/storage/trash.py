"""Deleting checkpoint folders so that a crash never leaves one half-deleted but still listed.

A folder is first renamed to `step_X.trash-<uuid>` (atomic: it stops being a
checkpoint at once), then removed. A removal that fails, or a crash before it, leaves
only trash, which the next prune sweeps together with the `.tmp-` folders of writers
that crashed mid-save.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from tinycats.storage.atomic import TMP_MARK
from tinycats.storage.layout import TRASH_MARK

log = logging.getLogger(__name__)

STALE_TMP_SECONDS = 3600.0
"""A `.tmp-` folder older than this belongs to a crashed writer and may be swept by prune;
a younger one may be another process's save in progress."""


def move_aside(folder: Path) -> Path | None:
    """Rename `folder` to a trash name; None when it does not exist."""
    trash = folder.with_name(f"{folder.name}{TRASH_MARK}{uuid.uuid4().hex}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return None
    return trash


def remove_tree(path: Path) -> bool:
    """Delete a folder, logging (not raising) a failure: a later prune sweeps what is left."""
    try:
        shutil.rmtree(path)
        return True
    except FileNotFoundError:
        return True
    except OSError as err:
        log.warning("could not delete %s (%s); a later prune will retry", path, err)
        return False


def sweep_leftovers(run_dir: Path) -> int:
    """Remove trash from earlier prunes and `.tmp-` folders of crashed writers; returns how many."""
    swept = 0
    try:
        entries = list(os.scandir(run_dir))
    except FileNotFoundError:
        return 0
    now = time.time()
    for entry in entries:
        try:
            stale_tmp = TMP_MARK in entry.name and now - entry.stat().st_mtime > STALE_TMP_SECONDS
            if TRASH_MARK in entry.name or stale_tmp:
                if entry.is_dir(follow_symlinks=False):
                    swept += remove_tree(Path(entry.path))
                else:
                    os.unlink(entry.path)
                    swept += 1
        except FileNotFoundError:
            continue  # another process swept it first
    return swept
