"""Atomic, durable file writes: the one way anything under the Store root is written.

A reader (or a process restarted after a crash) must only ever see a file's old
content or its complete new content, never a torn mix. So every write goes to a
temporary file in the same directory (the same filesystem, so the rename is
atomic), is fsynced, then `os.replace`d into place, and the directory itself is
fsynced so the new name survives a power loss too.

A full disk is the one OS error a user can fix; it becomes a one-line
`StorageError` and the temporary file is removed, leaving the old content intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tinycats.errors import StorageError

TMP_MARK = ".tmp-"
"""Infix of every temporary name; anything containing it is unfinished work."""


def tmp_name(path: Path) -> Path:
    """A unique sibling of `path` for writing before the atomic rename."""
    return path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex}")


FSYNC_DIR_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
"""Errors of filesystems that cannot fsync a directory (some FUSE and network mounts,
where durability comes from the Store's commit() instead)."""


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (new, renamed, removed names) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in FSYNC_DIR_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def disk_full_as_storage_error(path: Path) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT into the user-facing StorageError naming `path` and the fix."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(
                f"no space left on device writing {path}; free space or use --out elsewhere"
            ) from None
        raise


@contextlib.contextmanager
def synced_file(path: Path) -> Iterator[BinaryIO]:
    """A new file at `path` to write into, fsynced when the block ends, so a manifest or
    pointer written after it cannot outlive its data (no rename: callers own atomicity)."""
    with open(path, "xb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_file_synced(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to a new file at `path` and fsync it (no rename: callers own atomicity)."""
    with synced_file(path) as f:
        f.write(data)


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically (tmp + os.replace); `durable` adds the fsyncs.

    Readers always see the old or the new content. Without `durable` (for caches
    that can be rebuilt) a power loss may leave the old content or an empty file.
    """
    path = Path(path)
    tmp = tmp_name(path)
    with disk_full_as_storage_error(path):
        try:
            if durable:
                write_file_synced(tmp, data)
            else:
                tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace `path` with `data` as indented JSON, atomically (and durably by default)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    write_bytes_atomic(path, text.encode(), durable=durable)


def read_json(path: Path) -> Any:
    """Parse a JSON file written by `write_json_atomic`."""
    return json.loads(Path(path).read_bytes())
