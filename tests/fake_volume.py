"""A temp-dir stand-in for a Modal volume, to test the commit/reload discipline without Modal.

What it models (the parts of `modal.Volume` that code must respect):

- One committed state per volume (the "backing" directory), shared by everyone.
- Each container has its own mount (`vol.mount(name)` → `FakeContainer`), a private
  copy of the committed state taken when mounted. Writes under `container.path`
  are invisible to other containers until this container `commit()`s AND the other
  container `reload()`s — exactly the discipline Modal imposes.
- `commit()` publishes this container's changes since its last mount/reload/commit:
  new and modified files are written to the backing state and files it deleted are
  deleted there (other containers' committed files it never touched are left alone,
  like Modal's last-writer-wins per file).
- `reload()` replaces the mount's contents with the committed state (uncommitted
  local changes are dropped), but raises `RuntimeError("volume busy: files open")`
  while any file opened through `container.open(path, mode)` is still open, as
  Modal refuses to reload with open files.

Usage:

    vol = FakeVolume(tmp_path / "vol")
    trainer, evaluator = vol.mount("trainer"), vol.mount("evaluator")
    store = VolumeStore(trainer, trainer.path)        # a container is the duck-typed volume
    ...write under trainer.path...; store.commit()    # publish
    evaluator.reload()                                 # now evaluator.path shows it

Each `FakeContainer` duck-types as the `volume` argument of
`tinycats.storage.VolumeStore` (it has `commit()` and `reload()`): inside a Modal
container, `modal.Volume.commit()`/`.reload()` likewise act for that container.
Counters `commits` and `reloads` let tests assert the discipline was followed.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import IO, Any


def _snapshot(root: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under root (what a commit compares against)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _replace_contents(dest: Path, source: Path) -> None:
    """Make `dest` (kept as the same directory) an exact copy of `source`."""
    for child in list(dest.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(source, dest, dirs_exist_ok=True)


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


class FakeContainer:
    """One container's mount of a FakeVolume; duck-types as the volume VolumeStore wraps."""

    def __init__(self, volume: FakeVolume, name: str, path: Path) -> None:
        self.volume = volume
        self.name = name
        self.path = path
        self.commits = 0
        self.reloads = 0
        self._handles: list[IO[Any]] = []
        self._base: dict[str, str] = {}
        self._sync_from_backing()

    def _sync_from_backing(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _replace_contents(self.path, self.volume.backing)
        self._base = _snapshot(self.path)

    def open(self, path: Path | str, mode: str = "r") -> IO[Any]:
        """Open a file under the mount and track it: reload() is refused until it is closed."""
        handle = open(self.path / path, mode)  # noqa: SIM115 - the caller owns the handle
        self._handles.append(handle)
        return handle

    @property
    def open_files(self) -> list[str]:
        return [h.name for h in self._handles if not h.closed]

    def close_all(self) -> None:
        """Close every tracked handle (a typical `close_handles` callback for VolumeStore)."""
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    def commit(self) -> None:
        """Publish this container's additions, modifications and deletions."""
        current = _snapshot(self.path)
        backing = self.volume.backing
        for rel, digest in current.items():
            if self._base.get(rel) != digest:
                target = backing / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.path / rel, target)
        for rel in self._base.keys() - current.keys():
            (backing / rel).unlink(missing_ok=True)
        _prune_empty_dirs(backing)
        self._base = current
        self.commits += 1

    def reload(self) -> None:
        """Replace the mount with the committed state; refused while tracked files are open."""
        if self.open_files:
            raise RuntimeError(f"volume busy: files open ({', '.join(self.open_files)})")
        self._sync_from_backing()
        self.reloads += 1

    def __repr__(self) -> str:
        return f"FakeContainer({self.name!r}, {str(self.path)!r})"


class FakeVolume:
    """A volume: a committed backing directory plus per-container mounts under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.backing = self.root / "committed"
        self.backing.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, FakeContainer] = {}

    def mount(self, name: str) -> FakeContainer:
        """A new container mounting the volume: it starts from the committed state."""
        if name in self.containers:
            raise ValueError(f"container {name!r} is already mounted")
        container = FakeContainer(self, name, self.root / "mounts" / name)
        self.containers[name] = container
        return container

    def committed_files(self) -> list[str]:
        """Relative paths of every committed file (for assertions)."""
        return sorted(_snapshot(self.backing))
