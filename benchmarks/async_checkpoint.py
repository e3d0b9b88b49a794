"""Async vs sync checkpoint: how long the training loop is blocked per checkpoint.

A ResNet-18 classifier with AdamW state (moments filled by a few real steps) and EMA.
Sync: the loop waits for snapshot + write + fsync + manifest + commit + prune. Async:
the loop waits only for the CPU snapshot; the write finishes on the writer thread while
training would go on (here: while we wait outside the timed region).

    python benchmarks/async_checkpoint.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tinycats.config import build_config
from tinycats.storage import LocalStore
from tinycats.train.engine import Trainer, build_trainer


def blocked_seconds(trainer: Trainer, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        trainer.train_step()  # a real step between checkpoints, as in training
        start = time.perf_counter()
        trainer.checkpoint({"val_acc": 0.5})
        times.append(time.perf_counter() - start)
        trainer.writer.wait()  # the background write completes outside the timed region
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    repeats = 2 if args.smoke else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results = {}
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
            results[mode] = statistics.median(blocked_seconds(trainer, repeats))
            trainer.writer.close()
        ratio = results["async"] / results["sync"]
        print(f"ResNet-18 + AdamW + EMA checkpoint, median of {repeats}")
        print(f"  sync  save blocks the loop  {results['sync'] * 1000:8.1f} ms")
        print(f"  async save blocks the loop  {results['async'] * 1000:8.1f} ms")
        print(f"  async/sync = {ratio:.3f} (goal <= 0.15)")


if __name__ == "__main__":
    main()
