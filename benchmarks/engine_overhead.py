"""Engine overhead: training throughput of `Trainer.fit` vs a bare PyTorch loop.

Same model, same packed dataset and loader, same batch, same optimizer. The bare loop
has only forward, backward and step. Each case is measured twice: with the engine
doing the same work (EMA and clipping off: what remains is the engine itself: LR
schedule, progress, preemption checks, step bookkeeping), and with the defaults (EMA
update and grad clipping, real work a tutorial loop leaves out). Each side is measured as
the marginal cost of N more steps (time for 2N steps minus time for N), so set-up,
the final evaluation and the final checkpoint cancel out.

    python benchmarks/engine_overhead.py            # classifier + DiT test preset
    python benchmarks/engine_overhead.py --tiny     # also the DiT tiny preset (slow on CPU)
    python benchmarks/engine_overhead.py --smoke    # a few steps, to check it runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from tinycats.config import TrainConfig, build_config
from tinycats.storage import LocalStore
from tinycats.train.engine import build_trainer
from tinycats.train.optimizer import build_optimizer


def engine_seconds(config: TrainConfig, root: Path, steps: int, run_id: str) -> float:
    config = config.model_copy(deep=True)
    config.optim.max_steps = steps
    config.checkpoint.every_steps = steps
    trainer = build_trainer(config, LocalStore(root), run_id, progress=False)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def bare_seconds(config: TrainConfig, root: Path, steps: int) -> float:
    """The same work with nothing around it: the loop a tutorial would write."""
    trainer = build_trainer(config, LocalStore(root), "bare-setup", progress=False)
    model, task, batches = trainer.model, trainer.task, trainer.batches
    optimizer = build_optimizer(model, config)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        images, labels = batches.next()
        loss, _ = task.loss(model, images, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    loss.item()
    return time.perf_counter() - start


def measure(name: str, config: TrainConfig, steps: int, root: Path) -> dict[str, float]:
    """Both sides as the marginal cost of N steps, T(2N) - T(N), best of two rounds."""
    run_id = "".join(c if c.isalnum() else "-" for c in name)
    engine_runs, bare_runs = [], []
    for round_ in range(2):
        tag = f"{run_id}-{round_}"
        engine_runs.append(
            engine_seconds(config, root, 2 * steps, f"{tag}-2n")
            - engine_seconds(config, root, steps, f"{tag}-n")
        )
        bare_runs.append(bare_seconds(config, root, 2 * steps) - bare_seconds(config, root, steps))
    engine, bare = min(engine_runs), min(bare_runs)
    images = steps * config.optim.batch_size
    result = {"engine_img_s": images / engine, "bare_img_s": images / bare, "ratio": bare / engine}
    print(
        f"{name:<40} engine {result['engine_img_s']:8.1f} img/s   bare {result['bare_img_s']:8.1f}"
        f" img/s   engine/bare = {result['ratio']:.3f}x (goal >= 0.95x)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="a few steps, tiny sizes")
    parser.add_argument("--tiny", action="store_true", help="also the DiT tiny preset")
    args = parser.parse_args()
    steps = 3 if args.smoke else args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {steps} steps per side")
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
            measure(f"{name} same work", matched, steps, root)
            # Defaults: EMA update and grad clipping are extra work the bare loop skips.
            measure(f"{name} +EMA +clip", config, steps, root)


if __name__ == "__main__":
    main()
