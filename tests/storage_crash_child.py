"""Crash-injection writer: saves and prunes small checkpoints in a loop until it is killed.

It resumes from `load_latest()` (so successive victims re-save steps and exercise
replacement), and appends to LOG one line `start <step>` when it begins and one
line `<step>` right after each `save()` returns, i.e. once that step is committed.
The test reads the last committed step from LOG at the instant of the SIGKILL.

Run as a script (`python tests/storage_crash_child.py ROOT LOG`) for a fresh
interpreter, or call `run(root, log)` in a forked process to skip torch's import.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tinycats.storage import CheckpointManager, LocalStore

RUN_ID = "crash-run"
POLICY = {"keep_last": 2, "keep_best": 1, "keep_every": 7, "best_metric": "val_acc"}


def manager(root: Path) -> CheckpointManager:
    return CheckpointManager(
        LocalStore(root), "classifier", RUN_ID, run_date="2026-01-01", **POLICY
    )


def run(root: Path, log_path: Path) -> None:
    torch.set_num_threads(1)
    ckpts = manager(root)
    loaded = ckpts.load_latest()
    step = loaded.info.step if loaded else 0
    gen = torch.Generator().manual_seed(step)
    with open(log_path, "a") as log:
        log.write(f"start {step}\n")
        log.flush()
        while True:
            step += 1
            weights = {
                "model": {"w": torch.randn(64, 256, generator=gen), "step": torch.tensor(step)}
            }
            state = {"step": step, "optimizer": {"exp_avg": torch.randn(64, 256, generator=gen)}}
            metrics = {"val_acc": float(torch.rand(1, generator=gen))}
            ckpts.save(step, weights, state, {"config": {"seed": 0}}, metrics)
            log.write(f"{step}\n")
            log.flush()


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
