"""A temp-dir stand-in for a Modal volume that behaves as the pinned client (modal 1.6.4) does.

Tests run our code against this contract, so it copies the client, not our wishes. Each
rule names the client code it is read from (site-packages/modal):

1. **Mounts are private views.** Each container (`vol.mount(name)` → `FakeContainer`)
   starts from the committed state; what it writes under `container.path` reaches the
   volume when published, and other containers see it after their next reload
   (volume.py `_Volume` docstring).
2. **`commit()` publishes, then reloads** (volume.py `_Volume.commit`: `VolumeCommit`,
   then `_do_reload` unless the server answers `skip_reload`). So a commit brings in what
   other containers published, and it fails like a reload while files are open, *after*
   its writes were published.
3. **`reload()` is refused while files are open** (volume.py `_Volume.reload`: "there are
   open files preventing the operation"; `_open_files_error_annotation` finds them in
   `/proc/<pid>/fd`). The fake looks at `/proc/self/fd` and `/proc/self/maps`, so a
   memory-mapped shard or a file the checkpoint writer thread holds blocks it as on
   Modal. A reload may also publish this container's uncommitted changes ("Any
   uncommitted changes ... may implicitly be committed when reloading"); the fake does.
4. **Background commits publish at any time** (volume.py `_volume_to_mount_proto` mounts
   every volume with `allow_background_commits=True`; the volumes guide: changes are
   committed in the background every few seconds). `background_commit()` publishes the
   mount as it is, half-written files included; `FakeVolume(background_every=k)`
   does it at every k-th file opened under a mount (a `sys.addaudithook` on "open"),
   so a publish lands in the middle of writing a checkpoint.
5. **The volume is committed on container exit** (_runtime/user_code_imports.py
   `Service.lifecycle_context` step 8 → task_lifecycle_manager.py `volume_commit`: a
   plain `VolumeCommit` after exit handlers, whatever is open). `exit()` does that for a
   container that ends normally or by an exception; `kill()` (SIGKILL after the grace
   period, a lost host) publishes nothing. `vol.container(name)` wraps both.

Publishing is last-writer-wins per file, deletions included (the `_Volume` docstring).
Counters `commits`, `reloads` and `publishes` let tests assert the discipline.

    vol = FakeVolume(tmp_path / "vol")
    with vol.container("trainer") as trainer:
        store = VolumeStore(trainer, trainer.path)   # a container duck-types as modal.Volume
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

OPEN_FILES_ERROR = "there are open files preventing the operation"
"""The server's message, as volume.py `_Volume.reload` matches it."""


class ContainerKilled(BaseException):
    """Raised by a test to end a container without its exit commit (SIGKILL, lost host)."""


def _signature(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path → (size, mtime_ns) of every file under root; files that vanish while
    listing (a concurrent rename or delete) are skipped, as a publish would miss them."""
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            continue
    return found


def _copy_tree(source: Path, dest: Path) -> None:
    """Make `dest` (kept as the same directory) an exact copy of `source`."""
    dest.mkdir(parents=True, exist_ok=True)
    for child in list(dest.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(source, dest, dirs_exist_ok=True)


def _prune_empty_dirs(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):  # not empty, or already gone
            path.rmdir()


def open_paths_under(root: Path) -> list[str]:
    """Files under `root` this process holds open or mapped (what blocks a Modal reload)."""
    root_text = str(root.resolve())
    found: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                found.add(os.readlink(f"/proc/self/fd/{fd}"))
    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                found.add(parts[5].strip())
    return sorted(p for p in found if p.startswith(root_text + os.sep))


class FakeContainer:
    """One container's mount of a FakeVolume; duck-types as the volume VolumeStore wraps."""

    def __init__(self, volume: FakeVolume, name: str, path: Path) -> None:
        self.volume = volume
        self.name = name
        self.path = path
        self.commits = 0
        self.reloads = 0
        self.publishes = 0
        self.alive = True
        self._handles: list[IO[Any]] = []
        self._base: dict[str, tuple[int, int]] = {}
        with volume.lock:
            self._sync_from_backing()

    # -- the two halves of every operation ----------------------------------------------------

    def _sync_from_backing(self) -> None:
        with _not_watched():
            _copy_tree(self.volume.backing, self.path)
            self._base = _signature(self.path)

    def _publish(self) -> None:
        with _not_watched():
            self._publish_changes()
        self.publishes += 1

    def _publish_changes(self) -> None:
        """Write this container's additions, modifications and deletions to the volume."""
        current = _signature(self.path)
        backing = self.volume.backing
        for rel, sig in current.items():
            if self._base.get(rel) != sig:
                target = backing / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):  # renamed away meanwhile
                    shutil.copy2(self.path / rel, target)
        for rel in self._base.keys() - current.keys():
            (backing / rel).unlink(missing_ok=True)
        _prune_empty_dirs(backing)
        self._base = current

    def _refuse_if_busy(self) -> None:
        busy = open_paths_under(self.path)
        if busy:
            first = Path(busy[0]).relative_to(self.path.resolve())
            raise RuntimeError(f"{OPEN_FILES_ERROR}: path {first} is open")

    def _check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError(f"container {self.name!r} has exited")

    # -- what modal.Volume offers inside a container --------------------------------------------

    def commit(self) -> None:
        """Publish, then reload (refused while files are open, after publishing)."""
        self._check_alive()
        with self.volume.lock:
            self._publish()
            self.commits += 1
            self._refuse_if_busy()
            self._sync_from_backing()

    def reload(self) -> None:
        """See what others published; refused while files are open. Uncommitted changes
        are published first rather than lost."""
        self._check_alive()
        with self.volume.lock:
            self._refuse_if_busy()
            self._publish()
            self._sync_from_backing()
            self.reloads += 1

    # -- what the platform does on its own -------------------------------------------------------

    def background_commit(self) -> None:
        """The platform publishes the mount as it is now (no reload)."""
        if self.alive:
            with self.volume.lock:
                self._publish()

    def exit(self) -> None:
        """The container ends (normally or by an exception): its volumes are committed."""
        if self.alive:
            self.background_commit()
            self.alive = False

    def kill(self) -> None:
        """The container is gone without an exit commit."""
        self.alive = False

    # -- helpers for tests -------------------------------------------------------------------------

    def unpublished(self) -> list[str]:
        """Files added, changed or deleted under the mount since it last synced or published:
        what its exit commit would publish."""
        current = _signature(self.path)
        return sorted(
            p for p in current.keys() | self._base.keys() if current.get(p) != self._base.get(p)
        )

    def open(self, path: Path | str, mode: str = "r") -> IO[Any]:
        """Open a file under the mount and remember it for `close_all`."""
        handle = open(self.path / path, mode)  # noqa: SIM115 - the caller owns the handle
        self._handles.append(handle)
        return handle

    @property
    def open_files(self) -> list[str]:
        return open_paths_under(self.path)

    def close_all(self) -> None:
        """Close every handle opened through `open` (a `close_handles` callback for tests)."""
        for handle in self._handles:
            handle.close()
        self._handles.clear()

    def __repr__(self) -> str:
        return f"FakeContainer({self.name!r}, {str(self.path)!r})"


class FakeVolume:
    """A volume: a committed backing directory plus per-container mounts under `root`.

    `background_every=k` publishes a mount at every k-th file opened under it (0: never).
    """

    def __init__(self, root: Path, *, background_every: int = 0) -> None:
        self.root = Path(root).resolve()
        self.backing = self.root / "committed"
        self.backing.mkdir(parents=True, exist_ok=True)
        self.containers: dict[str, FakeContainer] = {}
        self.lock = threading.RLock()
        self.background_every = background_every
        self._opens = 0
        if background_every:
            _watch_opens(self)

    def mount(self, name: str) -> FakeContainer:
        """A new container mounting the volume: it starts from the committed state."""
        if name in self.containers:
            raise ValueError(f"container {name!r} is already mounted")
        container = FakeContainer(self, name, self.root / "mounts" / name)
        self.containers[name] = container
        return container

    @contextlib.contextmanager
    def container(self, name: str) -> Iterator[FakeContainer]:
        """A container for the length of a block: committed on exit, unless killed."""
        container = self.mount(name)
        try:
            yield container
        except ContainerKilled:
            container.kill()
            raise
        except BaseException:
            container.exit()
            raise
        container.exit()

    def committed_files(self) -> list[str]:
        """Relative paths of every committed file (for assertions)."""
        return sorted(_signature(self.backing))

    def _opened(self, path: str) -> None:
        """Audit hook: a file was opened somewhere in this process."""
        for container in list(self.containers.values()):
            if container.alive and path.startswith(str(container.path) + os.sep):
                self._opens += 1
                if self._opens % self.background_every == 0:
                    container.background_commit()
                return


_WATCHED: weakref.WeakSet[FakeVolume] = weakref.WeakSet()
_IN_HOOK = threading.local()


@contextlib.contextmanager
def _not_watched() -> Iterator[None]:
    """The fake's own file operations (publish, sync) do not count as opens."""
    previous = getattr(_IN_HOOK, "active", False)
    _IN_HOOK.active = True
    try:
        yield
    finally:
        _IN_HOOK.active = previous


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or getattr(_IN_HOOK, "active", False):
        return
    target = args[0]
    if not isinstance(target, str | os.PathLike):  # an fd, or bytes
        return
    with _not_watched():
        path = os.path.abspath(os.fspath(target))
        for volume in list(_WATCHED):
            volume._opened(path)


def _watch_opens(volume: FakeVolume) -> None:
    """Audit hooks cannot be removed, so one hook serves every volume that asks for it."""
    if not _WATCHED and not getattr(sys, "_tinycats_fake_volume_hook", False):
        sys.addaudithook(_audit)
        sys._tinycats_fake_volume_hook = True  # type: ignore[attr-defined]
    _WATCHED.add(volume)


class FakeDict:
    """An in-memory `modal.Dict` for leases: `put(..., skip_if_exists=True)` is an atomic
    create that says whether it won (modal 1.6.4 dict.py `_Dict.put`)."""

    def __init__(self) -> None:
        self._data: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            return self._data.get(key, default)

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool:
        with self._lock:
            if skip_if_exists and key in self._data:
                return False
            self._data[key] = value
            return True
