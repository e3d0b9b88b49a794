"""TinyDiT speed on this machine: CFG sampling (batched vs two forwards) and training steps.

1. Sampling throughput (images/s) with classifier-free guidance at 50 Euler steps for the
   tiny preset: tinycats' sampler (cond + uncond in ONE forward on 2B) side by side with
   an unbatched CFG baseline (two forwards per step), and their ratio. Both integrate with
   the same `integrate`, so only the guidance batching differs; their outputs are checked
   to agree.
2. Training throughput (images/s, forward + backward + AdamW step) of a bare loop for the
   test and tiny presets: the reference the training engine is compared against.

    python benchmarks/dit_sampling.py            # tiny preset, 50 steps (a few minutes on CPU)
    python benchmarks/dit_sampling.py --smoke    # test preset, 4 steps (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor

from tinycats.config import DiTConfig
from tinycats.models.dit import PRESETS, TinyDiT, dit_args_from_config
from tinycats.models.flow import (
    VelocityFn,
    flow_matching_loss,
    integrate,
    sample,
    velocity_from_prediction,
)

NUM_CLASSES = 12


def build(preset: str) -> TinyDiT:
    torch.manual_seed(0)
    args = dit_args_from_config(
        DiTConfig(preset=preset), PRESETS[preset]["image_size"], NUM_CLASSES
    )
    model = TinyDiT(args)
    with torch.no_grad():  # leave adaLN-zero: give the zero layers values, as after training
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.02)
    return model


def unbatched_cfg(model: TinyDiT, y: Tensor, cfg_scale: float) -> VelocityFn:
    """The naive guidance baseline: a conditional and an unconditional forward per step."""
    y_null = torch.full_like(y, model.null_class)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        v_cond = velocity_from_prediction(model(x, t, y), x, t, model.prediction)
        v_uncond = velocity_from_prediction(model(x, t, y_null), x, t, model.prediction)
        return v_uncond + cfg_scale * (v_cond - v_uncond)

    return velocity


def timed(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of `repeats` runs (the least disturbed by other work on the machine)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_sampling(preset: str, n: int, steps: int, cfg_scale: float, repeats: int) -> None:
    model = build(preset).eval()
    shape = (3, model.args.image_size, model.args.image_size)
    y = torch.arange(n) % NUM_CLASSES

    def batched() -> Tensor:
        gen = torch.Generator().manual_seed(0)
        return sample(model, y, steps=steps, cfg_scale=cfg_scale, generator=gen, image_shape=shape)

    @torch.no_grad()
    def two_forwards() -> Tensor:
        noise = torch.randn((n, *shape), generator=torch.Generator().manual_seed(0))
        x0 = model.noise_scale * noise
        velocity = unbatched_cfg(model, y, cfg_scale)
        return integrate(velocity, x0, steps=steps, sampler="euler").clamp(-1, 1)

    batched()  # warm-up (allocator, kernels)
    # Interleaved, best of `repeats`: a neighbour's load then hits both sides alike.
    t_batched = t_unbatched = float("inf")
    for _ in range(repeats):
        t, a = timed(batched, 1)
        t_batched = min(t_batched, t)
        t, b = timed(two_forwards, 1)
        t_unbatched = min(t_unbatched, t)
    same = torch.allclose(a, b, atol=1e-4)
    print(
        f"sampling  preset={preset} {shape[1]}px n={n} steps={steps} euler cfg={cfg_scale} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"  batched CFG (1 forward of 2B/step)  {n / t_batched:8.2f} img/s  ({t_batched:.2f} s)")
    print(
        f"  unbatched CFG (2 forwards of B/step) {n / t_unbatched:8.2f} img/s  ({t_unbatched:.2f} s)"
    )
    print(f"  ratio batched/unbatched: {t_unbatched / t_batched:.2f}x   outputs agree: {same}")


def bench_training(preset: str, batch: int, iters: int) -> None:
    model = build(preset).train()
    size = model.args.image_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.rand(batch, 3, size, size, generator=gen) * 2 - 1
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)

    def step() -> None:
        loss = flow_matching_loss(model, x1, y, class_dropout=0.1, null_class=model.null_class)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    # The median step: the 2 CPU cores are shared, so a mean would measure the neighbours.
    seconds = statistics.median(timed(step, 1)[0] for _ in range(iters))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"training  preset={preset:5s} {size:3d}px {params:5.1f}M params batch={batch:3d}: "
        f"{batch / seconds:8.1f} img/s  ({seconds * 1000:.0f} ms/step median, bare loop)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="test preset, few steps")
    parser.add_argument("--n", type=int, default=8, help="images sampled per run")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg", type=float, default=3.0)
    args = parser.parse_args()

    if args.smoke:
        bench_sampling("test", n=4, steps=4, cfg_scale=args.cfg, repeats=3)
        bench_training("test", batch=16, iters=5)
        return
    bench_sampling("tiny", n=args.n, steps=args.steps, cfg_scale=args.cfg, repeats=2)
    bench_training("test", batch=64, iters=20)
    bench_training("tiny", batch=16, iters=7)


if __name__ == "__main__":
    main()
