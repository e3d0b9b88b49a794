"""ls / get / put / rm on a Modal volume from this machine, without mounting it.

Uses the volume SDK directly (`listdir`, `read_file`, `batch_upload`, `remove_file`;
there is no `copy_local_dir`). Every remote path is validated first: a path is
always inside the volume, so `..` components are refused rather than resolved, and
a leading `/` means the volume's root (as in `modal volume ls`).

Writes through the SDK are committed by Modal when the call returns; a container
that already has the volume mounted sees them after its next `reload()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tinycats.errors import StorageError

DIRECTORY = 2
"""`modal.types.FileEntryType.DIRECTORY` (an IntEnum): compared by value so this module
needs no modal import and tests can use any duck-typed volume."""


def validate_remote_path(path: str, *, allow_root: bool = True) -> str:
    """The normalised path inside the volume ("" is the root), or a StorageError.

    Refused: `..` anywhere (it could only mean leaving the volume), backslashes and
    NUL bytes (not POSIX path syntax), and — unless `allow_root` — the root itself.
    """
    if "\x00" in path or "\\" in path:
        raise StorageError(f"remote path {path!r} has a NUL or backslash; use / separators")
    parts = [p for p in PurePosixPath(path.strip()).parts if p not in ("/", ".")]
    if ".." in parts:
        raise StorageError(
            f"remote path {path!r} contains '..'; paths are relative to the volume root and "
            "cannot leave it"
        )
    normalised = "/".join(parts)
    if not normalised and not allow_root:
        raise StorageError(f"remote path {path!r} is the volume root; name a file or folder")
    return normalised


@dataclass(frozen=True)
class RemoteEntry:
    path: str
    is_dir: bool
    size: int
    mtime: int


class RemoteVolume:
    """A volume handle (`modal.Volume` or anything with the same four methods) plus checks."""

    def __init__(self, volume: Any, name: str = "volume") -> None:
        self.volume = volume
        self.name = name

    def ls(self, path: str = "/", *, recursive: bool = False) -> list[RemoteEntry]:
        remote = validate_remote_path(path)
        entries = self._listdir(remote, recursive=recursive)
        return sorted(
            (
                RemoteEntry(e.path, int(e.type) == DIRECTORY, int(e.size), int(e.mtime))
                for e in entries
            ),
            key=lambda e: e.path,
        )

    @contextmanager
    def _sdk_errors(self, remote: str) -> Iterator[None]:
        """Modal's exceptions (not builtin subclasses) as one-line StorageErrors with the fix."""
        try:
            yield
        except FileNotFoundError as err:
            raise self._missing(remote, err) from None
        except Exception as err:
            kind = type(err).__name__
            if not type(err).__module__.startswith("modal"):
                raise
            if kind == "NotFoundError":
                raise self._missing(remote, err) from None
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else kind
            fix = "run `modal token new`" if kind == "AuthError" else "check the name and path"
            raise StorageError(f"volume {self.name}: {first_line} ({kind}); {fix}") from None

    def _listdir(self, remote: str, *, recursive: bool) -> list[Any]:
        with self._sdk_errors(remote):
            return list(self.volume.listdir(remote or "/", recursive=recursive))

    def _missing(self, remote: str, err: Exception) -> StorageError:
        return StorageError(
            f"no {remote or '/'!r} on volume {self.name} ({err}); see `tinycats cloud volume ls "
            f"{self.name}`; files written in a container exist only after it commits"
        )

    def _files_under(self, remote: str) -> Iterator[RemoteEntry]:
        """(file entries) for `remote`: the file itself, or every file below a folder."""
        for entry in self.ls(remote, recursive=True):
            if not entry.is_dir:
                yield entry

    def get(self, path: str, local: Path) -> list[Path]:
        """Download a file (to `local`, or into `local` if it is a folder) or a folder tree."""
        remote = validate_remote_path(path)
        files = list(self._files_under(remote))
        single = len(files) == 1 and files[0].path.strip("/") == remote
        written: list[Path] = []
        for entry in files:
            source = entry.path.strip("/")
            if single:
                dest = local / PurePosixPath(source).name if local.is_dir() else local
            else:
                relative = PurePosixPath(source).relative_to(remote) if remote else source
                dest = local / relative
            self._download(source, dest)
            written.append(dest)
        return written

    def read_bytes(self, path: str) -> bytes:
        """A file's content (StorageError naming the fix when it is missing)."""
        remote = validate_remote_path(path, allow_root=False)
        with self._sdk_errors(remote):
            return b"".join(self.volume.read_file(remote))

    def _download(self, source: str, dest: Path) -> None:
        """Stream to a temporary sibling, then rename: an interrupted get leaves no torn file."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with self._sdk_errors(source), open(tmp, "wb") as out:
                for chunk in self.volume.read_file(source):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, local: Path, path: str, *, force: bool = False) -> str:
        """Upload a file or a folder tree to `path` (created as needed); refuses to overwrite
        unless `force`."""
        remote = validate_remote_path(path, allow_root=local.is_dir())
        if not local.exists():
            raise StorageError(f"{local} does not exist; check the local path")
        try:
            with self._sdk_errors(remote), self.volume.batch_upload(force=force) as batch:
                if local.is_dir():
                    batch.put_directory(local, "/" + remote)
                else:
                    batch.put_file(local, "/" + remote)
        except FileExistsError as err:
            raise StorageError(
                f"{err} already exists on volume {self.name}; pass --force to overwrite"
            ) from None
        return "/" + remote

    def rm(self, path: str, *, recursive: bool = False) -> str:
        """Remove a file, or a folder with `recursive`; never the whole volume."""
        remote = validate_remote_path(path, allow_root=False)
        with self._sdk_errors(remote):
            self.volume.remove_file(remote, recursive=recursive)
        return "/" + remote


def open_remote_volume(name: str) -> RemoteVolume:
    """The named Modal volume (must exist: a typo must not create an empty one)."""
    import modal

    try:
        return RemoteVolume(modal.Volume.from_name(name), name)
    except modal.exception.InvalidError as err:
        raise StorageError(f"{str(err).splitlines()[0]} Pass --volume with a valid name.") from None
