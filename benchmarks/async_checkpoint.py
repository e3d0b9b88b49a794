"""Async vs sync checkpoint: how long the training loop is blocked per checkpoint.

A ResNet-18 classifier with AdamW state (moments filled by a few real steps) and EMA.
Sync: the loop waits for snapshot + write + fsync + manifest + commit + prune. Async:
the loop waits only for the CPU snapshot; the write finishes on the writer thread while
training would go on (here: while we wait outside the timed region). The two modes
checkpoint in turns, one each, and the figure is the median of the per-pair ratios,
so a slow spell of a shared host (or of its disk) hits both sides of a pair.

    python benchmarks/async_checkpoint.py [--repeats 9] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine_overhead import alternated_pairs, median_ratio, medians
from tinycats.config import build_config
from tinycats.storage import LocalStore
from tinycats.train.engine import Trainer
from tinycats.train.run import build_trainer


def checkpoint_call(trainer: Trainer, blocked: list[float]) -> Callable[[], None]:
    """One real step, then one checkpoint; appends how long the checkpoint blocked."""

    def call() -> None:
        trainer.train_step()  # a real step between checkpoints, as in training
        start = time.perf_counter()
        trainer.checkpoint({"val_acc": 0.5})
        blocked.append(time.perf_counter() - start)
        trainer.writer.wait()  # the background write completes outside the timed region

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed checkpoint pairs")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.smoke else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trainers, blocked = {}, {}
        for mode in ("sync", "async"):
            config = build_config(
                "classifier",
                overrides=[
                    f"data.dir={json.dumps(str(root / 'data'))}",
                    "data.image_size=32",
                    "optim.batch_size=8",
                    f"checkpoint.async_save={'true' if mode == 'async' else 'false'}",
                    "retention.keep_last=2",
                ],
            )
            trainer = build_trainer(
                config, LocalStore(root / mode), f"bench-{mode}", progress=False
            )
            trainer.registry.start(trainer.run_id, config.task, config.to_dict())
            trainers[mode], blocked[mode] = trainer, []
        alternated_pairs(
            checkpoint_call(trainers["async"], blocked["async"]),
            checkpoint_call(trainers["sync"], blocked["sync"]),
            repeats,
        )
        for trainer in trainers.values():
            trainer.writer.close()
        # Blocked times only, paired in the order taken (the warm-up pairs dropped).
        pairs = list(zip(blocked["async"], blocked["sync"], strict=True))[-repeats:]
        async_s, sync_s = medians(pairs)
        print(f"ResNet-18 + AdamW + EMA checkpoint, {repeats} alternated pairs (medians)")
        print(f"  sync  save blocks the loop  {sync_s * 1000:8.1f} ms")
        print(f"  async save blocks the loop  {async_s * 1000:8.1f} ms")
        print(f"  async/sync = {median_ratio(pairs):.3f} (median of the pair ratios; goal <= 0.15)")


if __name__ == "__main__":
    main()
