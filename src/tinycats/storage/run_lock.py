"""One writer per run: the protocol every writer of a run holds, and its local lock file.

Two processes training one run id at once overwrite each other's checkpoints: the
path the first printed would hold the other's weights. So a writer first takes the
run, holds it for its whole life, and checks it still holds it before each commit:

    acquire()  take the run, or raise `RunBusy` naming the live holder (one line)
    fence()    raise `LeaseLost` unless this writer still holds the run (before a commit)
    release()  give the run up (at exit; a crash leaves what the next writer detects)

Two implementations share this protocol: `LocalRunLock` below (a lock file on this
machine's filesystem) and `tinycats.cloud.lease.RunLease` (a lease in a `modal.Dict`
across containers, where a file cannot arbitrate). `FencedStore` puts `fence()` in
front of every commit, whichever holds the run.

The local lock is `runs/<run_id>.lock`, a JSON file with the holder's pid, host, start
time and the kernel's start time of that pid. It is created complete or not at all
(written to a temporary name, then hard-linked into place: `link` fails if the name
exists, an atomic create-if-absent that never shows an empty file). A lock whose pid is
dead (or a zombie, or reused by a newer process) on this host is stale and taken over;
one of another host is never presumed dead, since its pid means nothing here. Takeover
and release happen under a `flock` of `runs/.writers.lock`, so two processes on this
host cannot both take over the same stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tinycats.errors import ConfigError, StorageError
from tinycats.storage.atomic import tmp_name
from tinycats.storage.layout import check_name
from tinycats.storage.store import Store

try:
    import fcntl
except ImportError:  # Windows: no flock; takeovers are then unserialised
    fcntl = None  # type: ignore[assignment]

LOCKS_DIR = "runs"
GUARD_FILE = ".writers.lock"


class RunBusy(ConfigError):
    """The run is held by another live writer: a user error, never retried."""


class LeaseLost(StorageError):
    """This writer no longer holds its run (taken over, or its lock removed): publish nothing."""


class RunWriter(Protocol):
    """What holds a run: see the module docstring."""

    run_id: str

    def acquire(self) -> None: ...

    def fence(self) -> None: ...

    def release(self) -> None: ...


W = TypeVar("W", bound=RunWriter)


@contextlib.contextmanager
def held(writer: W) -> Iterator[W]:
    """Hold the run for the block; released however the block ends."""
    writer.acquire()
    try:
        yield writer
    finally:
        writer.release()


class FencedStore:
    """A Store whose commits first check that the writer still holds the run: a writer that
    lost its run publishes nothing more (a Modal volume's background commits aside, which
    nothing can stop)."""

    def __init__(self, store: Store, writer: RunWriter) -> None:
        self.store, self.writer, self.root = store, writer, store.root

    def commit(self) -> None:
        self.writer.fence()
        self.store.commit()

    def reload(self) -> None:
        self.store.reload()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of `pid`, from /proc; None
    where /proc is not available or the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[19])


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether `pid` is a live process on this host (and the same process, when its start
    time is known: a pid reused after a crash is not the writer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return proc_start is None or started == proc_start


class LocalRunLock:
    """The lock file of `run_id` in a local Store, held by this process; see the module
    docstring. Usable as a context manager."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.run_id = check_name("run id", run_id)
        self.path = store.root / LOCKS_DIR / f"{run_id}.lock"
        self.token: str | None = None
        self.host = socket.gethostname()

    def __enter__(self) -> LocalRunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise takeover and release among the processes of this host."""
        with open(self.path.parent / GUARD_FILE, "a") as handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield  # closing the file drops the flock

    def read(self) -> dict[str, Any] | None:
        """The lock file's holder; None when there is no lock file."""
        try:
            holder = json.loads(self.path.read_bytes())
            return holder if isinstance(holder, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # damaged: never presumed stale, see acquire()

    def is_live(self, holder: dict[str, Any]) -> bool:
        """Whether the holder may still be writing: not provably dead on this host."""
        if holder.get("host") != self.host or not isinstance(holder.get("pid"), int):
            return True
        return pid_alive(holder["pid"], holder.get("proc_start"))

    def acquire(self) -> None:
        """Take the run, replacing a stale lock; RunBusy names a live holder."""
        token = uuid.uuid4().hex
        stat = _proc_stat(os.getpid())
        body = {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": self.host,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "proc_start": stat[1] if stat else None,
            "token": token,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._guard():
                holder = self.read()
                if holder == {}:
                    raise RunBusy(
                        f"lock file {self.path} of run {self.run_id} is unreadable; delete it "
                        "if no tinycats process is training this run"
                    )
                if holder is not None:
                    if self.is_live(holder):
                        raise RunBusy(self._busy_message(holder))
                    self.path.unlink(missing_ok=True)  # stale: its writer is dead
                self._create(json.dumps(body).encode())
        except OSError as err:
            raise StorageError(
                f"cannot write the run lock {self.path} ({err.strerror or err}); "
                "pass --out a writable folder"
            ) from None
        self.token = token

    def _create(self, data: bytes) -> None:
        """Create the lock file with its full content, or fail if it exists (see docstring)."""
        tmp = tmp_name(self.path)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # created meanwhile by a writer on another host
                raise RunBusy(self._busy_message(self.read() or {})) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _busy_message(self, holder: dict[str, Any]) -> str:
        where = f"pid {holder.get('pid')} on {holder.get('host')}"
        return (
            f"run {self.run_id} is being written by {where} since {holder.get('started_at')} "
            f"({self.path}); wait for it to finish, stop it, or choose another --run-id"
        )

    def fence(self) -> None:
        """Raise LeaseLost unless the lock file is still this process's."""
        holder = self.read()
        if self.token is None or not holder or holder.get("token") != self.token:
            raise LeaseLost(
                f"run {self.run_id}: this process's lock {self.path} was removed or taken "
                "over; stopping without publishing (resume the run once it is free)"
            )

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        if self.token is None:
            return
        with contextlib.suppress(OSError), self._guard():
            if (self.read() or {}).get("token") == self.token:
                self.path.unlink()
        self.token = None
