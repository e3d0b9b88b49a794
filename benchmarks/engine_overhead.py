"""Engine overhead: training throughput of `Trainer.fit` vs a bare PyTorch loop.

Same model, same packed dataset and loader, same batch, same optimizer. The bare loop
has only forward, backward and step. Each case is measured twice: with the engine
doing the same work (EMA and clipping off: what remains is the engine itself: LR
schedule, progress, preemption checks, step bookkeeping), and with the defaults (EMA
update and grad clipping, real work a tutorial loop leaves out).

The two sides take single steps in turns, inside one real `fit()`: before each of the
engine's steps, one bare step runs, so a slow spell of a shared host hits both sides
alike. An engine step is timed from the start of its `train_step` to the start of the
next one, so it includes the loop's own bookkeeping; set-up, evaluation and the
checkpoint at the end are outside every timed step. The figure is the median of the
per-pair ratios (timing whole runs of N steps instead printed 0.37x and 1.33x for the
same work on a busy host).

    python benchmarks/engine_overhead.py            # classifier + DiT test preset
    python benchmarks/engine_overhead.py --tiny     # also the DiT tiny preset (slow on CPU)
    python benchmarks/engine_overhead.py --smoke    # a few steps, to check it runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tinycats.config import TrainConfig, build_config
from tinycats.storage import LocalStore
from tinycats.train.optimizer import build_optimizer
from tinycats.train.run import build_trainer

WARMUP_PAIRS = 2
"""Pairs dropped at the start: first-step allocations and caches, on either side."""


# -- alternated single steps: shared by the benchmarks whose goal is a ratio -------------------


def seconds(call: Callable[[], object]) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def alternated_pairs(
    first: Callable[[], object], second: Callable[[], object], count: int
) -> list[tuple[float, float]]:
    """(first, second) seconds of `count` pairs of single calls made in turns, after
    WARMUP_PAIRS untimed ones: a change of the host's speed hits both sides of a pair."""
    for _ in range(WARMUP_PAIRS):
        first(), second()
    return [(seconds(first), seconds(second)) for _ in range(count)]


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    """Median over the pairs of first/second: robust to the spells that hit a few pairs."""
    return statistics.median(a / b for a, b in pairs)


def medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """The median of each side's times (for the absolute figures printed beside a ratio)."""
    return statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)


# -- the engine against the bare loop -------------------------------------------------------------


def bare_step(config: TrainConfig, root: Path) -> Callable[[], None]:
    """One step of the loop a tutorial would write, on its own model, optimizer and batches."""
    setup = build_trainer(config, LocalStore(root), "bare-setup", progress=False)
    model, task, batches = setup.model, setup.task, setup.batches
    optimizer = build_optimizer(model, config)
    model.train()

    def step() -> None:
        images, labels = batches.next()
        loss, _ = task.loss(model, images, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def engine_and_bare_pairs(
    config: TrainConfig, root: Path, count: int, run_id: str
) -> list[tuple[float, float]]:
    """(engine, bare) seconds of `count` step pairs, the engine's timed inside `fit()`."""
    bare = bare_step(config, root)
    bare()  # its first step's allocations, outside the pairs
    config = config.model_copy(deep=True)
    config.optim.max_steps = WARMUP_PAIRS + count + 1  # the last step's time is never taken
    config.checkpoint.every_steps = config.optim.max_steps  # one checkpoint, at the end
    trainer = build_trainer(config, LocalStore(root), run_id, progress=False)
    engine_step = trainer.train_step
    pairs: list[tuple[float, float]] = []
    resumed: list[float] = []  # when the engine's previous step began

    def bare_then_engine_step() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        entered = time.perf_counter()
        if resumed:
            pairs.append((entered - resumed[-1], seconds(bare)))
        resumed.append(time.perf_counter())
        return engine_step()

    trainer.train_step = bare_then_engine_step  # fit() calls it once per step
    trainer.fit()
    return pairs[WARMUP_PAIRS:]


def measure(name: str, config: TrainConfig, count: int, root: Path) -> float:
    """Print and return engine/bare throughput: the median of the per-pair bare/engine."""
    run_id = "".join(c if c.isalnum() else "-" for c in name)
    pairs = engine_and_bare_pairs(config, root, count, run_id)
    ratio = statistics.median(bare / engine for engine, bare in pairs)
    engine_s, bare_s = medians(pairs)
    batch = config.optim.batch_size
    print(
        f"{name:<36} engine {batch / engine_s:7.1f} img/s   bare {batch / bare_s:7.1f} img/s"
        f"   engine/bare = {ratio:.3f}x (median of {len(pairs)} alternated pairs; goal >= 0.95x)",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30, help="timed step pairs per case")
    parser.add_argument("--smoke", action="store_true", help="a few steps, tiny sizes")
    parser.add_argument("--tiny", action="store_true", help="also the DiT tiny preset")
    args = parser.parse_args()
    count = 3 if args.smoke else args.pairs
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {count} pairs per case")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = [f"data.dir={json.dumps(str(root / 'data'))}", "data.synthetic_per_class=64"]
        size = 32 if args.smoke else 64
        cases = {
            f"classifier resnet18 {size}px": build_config(
                "classifier", overrides=[*data, f"data.image_size={size}"]
            ),
            "dit test 32px": build_config(
                "dit",
                overrides=[
                    *data,
                    "dit.preset=test",
                    "dit.preview_per_class=0",
                    "optim.batch_size=64",
                ],
            ),
        }
        if args.tiny and not args.smoke:
            cases["dit tiny 128px"] = build_config(
                "dit",
                overrides=[
                    *data,
                    "dit.preset=tiny",
                    "data.image_size=128",
                    "dit.preview_per_class=0",
                    "optim.batch_size=16",
                ],
            )
        for name, config in cases.items():
            # Same work as the bare loop (no EMA, no clipping): the engine's own cost.
            matched = config.model_copy(deep=True)
            matched.optim.ema_decay, matched.optim.clip_grad = 0.0, 0.0
            measure(f"{name} same work", matched, count, root)
            # Defaults: EMA update and grad clipping are extra work the bare loop skips.
            measure(f"{name} +EMA +clip", config, count, root)


if __name__ == "__main__":
    main()
