"""Mixed precision and fused optimizers: classifier training throughput, side by side.

`optim.amp=bf16` vs `off` through the real engine (`Trainer.fit`, ResNet-18, batch 32,
the same packed data), on this machine's device. On a CPU, bf16 autocast pays only where
the cores multiply bf16 in hardware (AMX / AVX512-BF16); the script says which this is.
Each side is the marginal cost of N more steps (T(2N) - T(N)), the two sides alternate
and the best of the rounds is kept, because a shared host's speed drifts by tens of
percent within minutes. The step time at 64 px against 128 px says what progressive
resizing can save, and batches of 32 and 64 split a bf16 step into what every step
costs and what each image adds; the optimizer step is timed alone too: fused vs
for-loop AdamW.

    python benchmarks/amp_throughput.py              # 64, 96 and 128 px, 10 steps per side
    python benchmarks/amp_throughput.py --smoke      # a few steps at 32 px, to check it runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from engine_overhead import engine_seconds
from tinycats.config import build_config
from tinycats.models.classifier import create_classifier
from tinycats.train.device import cpu_has_native_bf16, select_device

BATCH = 32


def marginal_seconds(size: int, amp: str, batch: int, steps: int, root: Path, tag: str) -> float:
    """Seconds `steps` more engine steps cost at `size` px, `batch` images each."""
    config = build_config(
        "classifier",
        overrides=[
            f"data.dir={json.dumps(str(root / 'data'))}",
            "data.synthetic_per_class=64",
            f"data.image_size={size}",
            f"optim.amp={amp}",
            f"optim.batch_size={batch}",
        ],
    )
    return engine_seconds(config, root, 2 * steps, f"{tag}-2n") - engine_seconds(
        config, root, steps, f"{tag}-n"
    )


def throughput(size: int, steps: int, rounds: int, root: Path) -> dict[str, float]:
    """Images per second through the engine at `size`, for amp off and bf16."""
    best: dict[str, float] = {}
    for round_ in range(rounds):
        for amp in ("off", "bf16"):
            seconds = marginal_seconds(size, amp, BATCH, steps, root, f"{amp}-{size}-{round_}")
            best[amp] = min(best.get(amp, float("inf")), seconds)
    rate = {amp: steps * BATCH / seconds for amp, seconds in best.items()}
    print(
        f"classifier resnet18 {size:>3}px  fp32 {rate['off']:7.1f} img/s   "
        f"bf16 {rate['bf16']:7.1f} img/s   bf16/fp32 = {rate['bf16'] / rate['off']:.2f}x",
        flush=True,
    )
    return rate


def step_cost(size: int, steps: int, rounds: int, root: Path) -> None:
    """Split a bf16 step into a per-step part and a per-image part, from batches of
    BATCH and twice that: T(b) = fixed + b * per_image. The fixed part (weight casts and
    layout reorders, the weight gradients of the 512-channel convolutions, the
    optimizer) does not shrink with the image, which is why small images are not
    proportionally cheaper."""
    small, large = BATCH, 2 * BATCH
    best = {small: float("inf"), large: float("inf")}
    for round_ in range(rounds):
        for batch in best:
            seconds = marginal_seconds(
                size, "bf16", batch, steps, root, f"b{batch}-{size}-{round_}"
            )
            best[batch] = min(best[batch], seconds / steps)
    per_image = (best[large] - best[small]) / (large - small)
    fixed = best[small] - small * per_image
    relative = best[large] / large / (best[small] / small)
    # T(b) grows with b, so a negative per-step part means the host's load changed between the sides.
    noise = "   NOISE: negative per-step part, rerun on a quiet machine" if fixed < 0 else ""
    print(
        f"bf16 step at {size:>3}px: batch {small} {best[small] * 1000:.0f} ms, batch {large} "
        f"{best[large] * 1000:.0f} ms: an image costs {relative:.2f}x "
        f"as much in a batch of {large} ({fixed * 1000:.0f} ms per step + "
        f"{per_image * 1000:.1f} ms per image){noise}",
        flush=True,
    )


def optimizer_step_ms(fused: bool, repeats: int) -> float:
    model = create_classifier("resnet18", 12)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=fused)
    optimizer.step()  # the moments are allocated on the first step
    start = time.perf_counter()
    for _ in range(repeats):
        optimizer.step()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a few steps at 32 px")
    args = parser.parse_args()
    device = select_device()
    native = cpu_has_native_bf16() if device.type == "cpu" else "n/a"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, ", end="")
    print(f"native CPU bf16 (AMX/AVX512-BF16): {native}")
    steps, rounds = (2, 1) if args.smoke else (args.steps, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = (32, 64) if args.smoke else (64, 96, 128)
        rates = {size: throughput(size, steps, rounds, Path(tmp)) for size in sizes}
        for size in sizes:
            step_cost(size, steps, rounds, Path(tmp))
    # Progressive resizing pays off only as far as a small step is really cheaper.
    small, large = sizes[0], sizes[-1]
    print(
        f"step time at {small} px / at {large} px (pixels: {(small / large) ** 2:.2f}x): "
        + "   ".join(
            f"{amp} {rates[large][amp] / rates[small][amp]:.2f}x" for amp in ("off", "bf16")
        )
    )
    repeats = 2 if args.smoke else 20
    loop, fused = optimizer_step_ms(False, repeats), optimizer_step_ms(True, repeats)
    print(
        f"AdamW step, ResNet-18 (11.2M params): for-loop {loop:.1f} ms   fused {fused:.1f} ms"
        f"   fused/for-loop = {fused / loop:.2f}x"
    )


if __name__ == "__main__":
    main()
