"""Where outputs live: a root directory plus `commit()` (publish) and `reload()` (refresh).

Everything above this layer writes plain files under `store.root` and calls
`commit()` after each unit of work worth keeping (a checkpoint, a run record), and
`reload()` before reading what another process may have published. The local
backend makes commit a directory fsync and reload a no-op; the Modal-volume
backend delegates to `modal.Volume`. On a volume, writes may be published at any
time (background commits) but are only guaranteed to be after `commit()`, other
containers see them after their `reload()`, and both fail while files are open.

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
"""Substrings of the RuntimeError a volume raises when open files block a reload (and so a
commit, which reloads): modal 1.6.4 volume.py `_Volume.reload` re-raises the server's
"there are open files preventing the operation"."""


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
        try:
            if self.root.is_file():
                raise StorageError(f"--out {self.root} is a file; pass a folder for the outputs")
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(
                f"cannot create the output folder {self.root} ({err.strerror}); pass --out "
                "a writable folder"
            ) from None

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

    In the pinned client (modal 1.6.4, volume.py `_Volume.commit`) a commit publishes and
    then reloads, and a reload is refused while any file under the mount is open
    ("there are open files preventing the operation"), so both are retried here the
    same way: `close_handles` is called (it should close whatever the caller keeps open
    on the volume: dataset shards, memory maps, logs), then the call is repeated after a
    backoff. A commit whose reload was refused has already published; repeating it is
    harmless.
    """

    def __init__(
        self,
        volume: Any,
        mount_path: Path,
        close_handles: Callable[[], None] | None = None,
        max_attempts: int = 5,
        backoff_seconds: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts={max_attempts} must be at least 1")
        self.volume = volume
        self.root = Path(mount_path)
        self.close_handles = close_handles
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def commit(self) -> None:
        """Publish everything written under the mount to other containers."""
        self._while_busy("commit", self.volume.commit)

    def reload(self) -> None:
        """See what other containers committed."""
        self._while_busy("reload", self.volume.reload)

    def _while_busy(self, what: str, operation: Callable[[], None]) -> None:
        """Run `operation`, closing handles and backing off while the volume is busy."""
        last_error: RuntimeError | None = None
        for attempt in range(self.max_attempts):
            try:
                operation()
                return
            except RuntimeError as err:
                if not is_busy_error(err):
                    raise
                last_error = err
            log.warning(
                "volume %s busy (attempt %d/%d): %s",
                what,
                attempt + 1,
                self.max_attempts,
                last_error,
            )
            if self.close_handles is not None:
                self.close_handles()
            if attempt + 1 < self.max_attempts:
                self.sleep(self.backoff_seconds * 2**attempt)
        raise StorageError(
            f"volume at {self.root} stayed busy after {self.max_attempts} {what} attempts "
            f"({last_error}); close files opened under {self.root} before a {what}"
        )

    def __repr__(self) -> str:
        return f"VolumeStore({self.volume!r}, {str(self.root)!r})"


def is_busy_error(err: BaseException) -> bool:
    """Whether a volume refused an operation because files under its mount are open."""
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in BUSY_MARKERS)
