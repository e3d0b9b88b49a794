"""A stop request ends `train dit` within the stated budget, with one committed checkpoint.

The budget is `stop_budget_seconds` (Modal's `modal.preemption_grace_s` less a margin):
on Modal a slower stop is killed before its commit. The signal is sent while the run
evaluates and draws previews every few steps, which a stop must skip.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from test_train_engine import spawn, wait_for
from tinycats.config import build_config
from tinycats.storage import LocalStore, RunRegistry, load_checkpoint, resolve_checkpoint
from tinycats.train.preemption import stop_budget_seconds


def test_sigterm_stops_train_dit_within_the_budget(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = [
        f"data.dir={json.dumps(str(tmp_path / 'data'))}",
        "data.synthetic_classes=4",
        "data.synthetic_per_class=16",
        "optim.batch_size=8",
        "optim.max_steps=100000",
        "checkpoint.every_steps=3",  # evaluation, a preview grid and a save every 3 steps
    ]
    args = ["train", "dit", "--preset", "test", "--run-id", "s"]
    for item in settings:
        args += ["--set", item]
    proc = spawn(*args, out=out)
    previews = out / "samples" / "s"
    wait_for(lambda: len(list(previews.glob("*.png"))) >= 1 or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()[1]

    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    budget = stop_budget_seconds(build_config("dit"))
    assert proc.returncode == 0, err
    assert took < budget, f"the stop took {took:.1f} s, over the {budget:.0f} s budget"

    store = LocalStore(out)
    record = RunRegistry(store).get("s")
    assert record["status"] == "preempted" and record["preempted_by"] == "SIGTERM"
    stop = load_checkpoint(resolve_checkpoint(store, "s"))  # committed, and it verifies
    assert stop.info.step == record["step"]
    if stop.info.step % 3:  # the stop's own checkpoint: no evaluation, no preview
        assert stop.info.metrics == {}
        assert not (previews / f"step_{stop.info.step:08d}.png").exists()
