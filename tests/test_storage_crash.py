"""Crash injection: a writer SIGKILLed at random moments never costs a committed checkpoint.

After every kill, `load_latest()` must succeed without skipping anything (no torn
checkpoint is ever visible), every listed checkpoint must verify, and the loaded
step must be at least the last step whose `save()` had returned.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import storage_crash_child as child
from tinycats.storage import verify_checkpoint

KILLS = int(os.environ.get("TINYCATS_CRASH_KILLS", "20"))
SLOW_KILLS = 100


def committed_steps(log: Path) -> tuple[int, int]:
    """(number of `start` lines, highest step whose save returned) from the child's log."""
    lines = log.read_text().splitlines() if log.exists() else []
    starts = sum(line.startswith("start") for line in lines)
    steps = [int(line) for line in lines if line.isdigit()]
    return starts, max(steps, default=0)


def wait_for_start(log: Path, starts_before: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while committed_steps(log)[0] <= starts_before:
        assert time.monotonic() < deadline, "the crash writer never started"
        time.sleep(0.005)


def fork_writer(root: Path, log: Path) -> Callable[[], None]:
    proc = multiprocessing.get_context("fork").Process(target=child.run, args=(root, log))
    proc.start()

    def kill() -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()

    return kill


def exec_writer(root: Path, log: Path) -> Callable[[], None]:
    script = Path(child.__file__)
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(log)])

    def kill() -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    return kill


def check_after_kill(root: Path, committed: int, rounds: int) -> int:
    ckpts = child.manager(root)
    loaded = ckpts.load_latest()
    if committed == 0 and loaded is None:
        return 0
    assert loaded is not None, f"round {rounds}: nothing loads after step {committed} committed"
    assert loaded.skipped == [], f"round {rounds}: a torn checkpoint was visible: {loaded.skipped}"
    assert loaded.info.step >= committed, f"round {rounds}: went back to {loaded.info.step}"
    assert loaded.train_state["step"] == loaded.info.step
    assert int(loaded.weights["model"]["step"]) == loaded.info.step
    for info in ckpts.list():
        assert verify_checkpoint(info.path) == [], f"round {rounds}: {info.path} is damaged"
    return loaded.info.step


def crash_loop(tmp_path: Path, kills: int, start_writer, max_delay: float) -> None:
    root, log = tmp_path / "out", tmp_path / "committed.log"
    rng = random.Random(1234)
    progress = 0
    for round_ in range(kills):
        starts_before = committed_steps(log)[0]
        kill = start_writer(root, log)
        wait_for_start(log, starts_before)
        time.sleep(rng.uniform(0.0, max_delay))
        kill()
        _, committed = committed_steps(log)
        progress = check_after_kill(root, committed, round_)
    assert progress > 0, "the writer never committed a checkpoint: kills came too early"


def test_sigkill_never_loses_a_committed_checkpoint(tmp_path: Path) -> None:
    crash_loop(tmp_path, KILLS, fork_writer, max_delay=0.25)


@pytest.mark.slow
def test_sigkill_fresh_interpreters_100_times(tmp_path: Path) -> None:
    crash_loop(tmp_path, SLOW_KILLS, exec_writer, max_delay=0.5)
