"""One writer per run on one machine: the lock file, its stale detection, and two `train`s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_engine import committed_step, spawn, tiny_overrides, train_args, wait_for
from tinycats.errors import StorageError
from tinycats.storage import LocalStore, load_checkpoint, resolve_checkpoint, verify_checkpoint
from tinycats.storage.run_lock import FencedStore, LeaseLost, LocalRunLock, RunBusy, pid_alive


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with LocalRunLock(store, "r") as first:
        holder = json.loads(first.path.read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(RunBusy, match=rf"run r is being written by pid {os.getpid()} on "):
            LocalRunLock(store, "r").acquire()
        first.fence()
    assert not first.path.exists()  # released
    LocalRunLock(store, "r").acquire()  # and free at once


def test_a_dead_writers_lock_is_stale_and_taken_over(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    lock = LocalRunLock(store, "r")
    lock.path.parent.mkdir(parents=True)
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started_at": "then"}
    lock.path.write_text(json.dumps(stale))
    lock.acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_a_reused_pid_is_not_the_writer(tmp_path: Path) -> None:
    """The lock names this live pid, but a process start time it never had."""
    lock = LocalRunLock(LocalStore(tmp_path), "r")
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("no /proc: pid reuse cannot be told apart here")
    lock.path.parent.mkdir(parents=True)
    reused = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": 1}
    lock.path.write_text(json.dumps(reused))
    lock.acquire()  # taken over: that pid is not the process that wrote the lock


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"pid": 1, "host": "another-host", "started_at": "t"}, "pid 1 on another-host"),
        ("not json", "is unreadable; delete it"),
    ],
    ids=["other-host", "damaged"],
)
def test_a_lock_that_cannot_be_proven_stale_is_respected(
    tmp_path: Path, content: object, message: str
) -> None:
    lock = LocalRunLock(LocalStore(tmp_path), "r")
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(RunBusy, match=message):
        lock.acquire()


def test_a_writer_whose_lock_was_taken_commits_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    lock = LocalRunLock(store, "r")
    lock.acquire()
    fenced = FencedStore(store, lock)
    fenced.commit()
    lock.path.unlink()  # removed by hand while the writer runs
    with pytest.raises(LeaseLost, match="stopping without publishing"):
        fenced.commit()


def test_an_unwritable_store_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the folder belongs")
    with pytest.raises(StorageError, match="cannot write the run lock"):
        LocalRunLock(LocalStore(tmp_path), "r").acquire()


def test_two_trains_of_one_run_the_second_is_refused(tmp_path: Path, cli) -> None:
    """Same run id, other settings: the second refuses with one line naming the first,
    and every checkpoint of the run is the first's."""
    out = tmp_path / "out"
    first = spawn(*train_args("r", tiny_overrides(tmp_path, max_steps=10_000, every=4)), out=out)
    wait_for(lambda: committed_step(out, "r") >= 4 or first.poll() is not None)
    assert first.poll() is None, "the first run ended before the second started"
    other = [*tiny_overrides(tmp_path, max_steps=12, every=2), "optim.lr=0.01"]
    second = cli(*train_args("r", other), "--out", str(out))  # in process: another pid
    first.send_signal(signal.SIGTERM)  # the first stops with a checkpoint, as it would anyway
    _, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    [line] = second.stderr.strip().splitlines()
    assert f"being written by pid {first.pid} on" in line
    assert "new run" not in second.stdout
    newest = load_checkpoint(resolve_checkpoint(LocalStore(out), "r"))
    assert newest.info.step >= 4 and newest.meta["config"]["optim"]["lr"] == 0.002
    assert all(not verify_checkpoint(p) for p in newest.info.path.parent.glob("step_*"))
    assert not (out / "runs" / "r.lock").exists()  # released at exit
