"""Where outputs live: a root directory plus `commit()` (publish) and `reload()` (refresh).

Everything above this layer writes plain files under `store.root` and calls
`commit()` after each unit of work worth keeping (a checkpoint, a run record), and
`reload()` before reading what another process may have published. The local
backend makes commit a directory fsync and reload a no-op; the Modal-volume
backend delegates to `modal.Volume`, whose writes are invisible to other
containers until committed and whose reload fails while files are open.

`modal` is never imported here: the volume object is duck-typed (anything with
`commit()` and `reload()`), so tests use `tests/fake_volume.py` instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tinycats.errors import StorageError
from tinycats.storage.atomic import fsync_dir

log = logging.getLogger(__name__)

BUSY_MARKERS = ("open files", "volume busy")
"""Substrings of the RuntimeError a volume raises when a reload is blocked by open files
(Modal 1.6: "there are open files preventing the operation")."""


@runtime_checkable
class Store(Protocol):
    """A root directory whose contents are published by `commit()` and refreshed by `reload()`."""

    root: Path

    def commit(self) -> None: ...

    def reload(self) -> None: ...


class LocalStore:
    """A directory on this machine: commit makes the root's entries durable, reload does nothing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def commit(self) -> None:
        # Files and their directories are fsynced as they are written (storage.atomic);
        # this covers top-level folders created since (checkpoints/, runs/, ...).
        fsync_dir(self.root)

    def reload(self) -> None:
        """Nothing to refresh: every process sees the local filesystem directly."""

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"


class VolumeStore:
    """A mounted Modal volume (or anything with `commit()`/`reload()`), mounted at `mount_path`.

    `close_handles` is called before retrying a reload that failed because files are
    open (Modal refuses to reload then); it should close whatever the caller keeps
    open on the volume (log files, dataset shards, memory maps).
    """

    def __init__(
        self,
        volume: Any,
        mount_path: Path,
        close_handles: Callable[[], None] | None = None,
        max_reload_attempts: int = 5,
        backoff_seconds: float = 0.1,
    ) -> None:
        if max_reload_attempts < 1:
            raise ValueError(f"max_reload_attempts={max_reload_attempts} must be at least 1")
        self.volume = volume
        self.root = Path(mount_path)
        self.close_handles = close_handles
        self.max_reload_attempts = max_reload_attempts
        self.backoff_seconds = backoff_seconds

    def commit(self) -> None:
        """Publish everything written under the mount to other containers."""
        self.volume.commit()

    def reload(self) -> None:
        """See what other containers committed; close handles and back off while busy."""
        for attempt in range(self.max_reload_attempts):
            try:
                self.volume.reload()
                return
            except RuntimeError as err:
                if not any(marker in str(err).lower() for marker in BUSY_MARKERS):
                    raise
                last_error = err
            log.warning(
                "volume reload busy (attempt %d/%d): %s",
                attempt + 1,
                self.max_reload_attempts,
                last_error,
            )
            if self.close_handles is not None:
                self.close_handles()
            if attempt + 1 < self.max_reload_attempts:
                time.sleep(self.backoff_seconds * 2**attempt)
        raise StorageError(
            f"volume at {self.root} stayed busy after {self.max_reload_attempts} reload attempts "
            f"({last_error}); close files opened under {self.root} before reloading"
        )

    def __repr__(self) -> str:
        return f"VolumeStore({self.volume!r}, {str(self.root)!r})"
