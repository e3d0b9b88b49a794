"""Mixed precision and fused optimizers: classifier training throughput, side by side.

`optim.amp=bf16` vs `off` through the real engine (`Trainer.train_step`, ResNet-18,
batch 32, the same packed data), on this machine's device. On a CPU, bf16 autocast pays
only where the cores multiply bf16 in hardware (AMX / AVX512-BF16); the script says
which this is. The two sides of each comparison take single steps in turns and the
figure is the median of the per-pair ratios, because a shared host's speed drifts by
tens of percent within minutes. The step time at 64 px against 128 px says what
progressive resizing can save, and batches of 32 and 64 split a bf16 step into what
every step costs and what each image adds; the optimizer step is timed alone too:
fused vs for-loop AdamW.

    python benchmarks/amp_throughput.py              # 64, 96 and 128 px, 20 step pairs each
    python benchmarks/amp_throughput.py --smoke      # a few steps at 32 px, to check it runs
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from engine_overhead import alternated_pairs, median_ratio, medians
from tinycats.config import build_config
from tinycats.models.classifier import create_classifier
from tinycats.storage import LocalStore
from tinycats.train.device import cpu_has_native_bf16, select_device
from tinycats.train.run import build_trainer

BATCH = 32


class Steps:
    """One engine step at a given (size, amp, batch), each trainer built once and reused."""

    def __init__(self, root: Path) -> None:
        self.root, self.trainers = root, {}

    def __call__(self, size: int, amp: str, batch: int = BATCH) -> Callable[[], object]:
        key = (size, amp, batch)
        if key not in self.trainers:
            config = build_config(
                "classifier",
                overrides=[
                    f"data.dir={json.dumps(str(self.root / 'data'))}",
                    "data.synthetic_per_class=64",
                    f"data.image_size={size}",
                    f"optim.amp={amp}",
                    f"optim.batch_size={batch}",
                    "optim.max_steps=100000",  # a long schedule: no step reaches its end
                ],
            )
            run_id = f"{amp}-{size}-b{batch}"
            self.trainers[key] = build_trainer(
                config, LocalStore(self.root), run_id, progress=False
            )
        return self.trainers[key].train_step


def throughput(steps: Steps, size: int, count: int) -> dict[str, float]:
    """Images per second through the engine at `size`, for amp off and bf16, in turns."""
    pairs = alternated_pairs(steps(size, "off"), steps(size, "bf16"), count)
    off_s, bf16_s = medians(pairs)
    ratio = median_ratio(pairs)  # fp32 time / bf16 time = bf16 throughput / fp32's
    print(
        f"classifier resnet18 {size:>3}px  fp32 {BATCH / off_s:7.1f} img/s   "
        f"bf16 {BATCH / bf16_s:7.1f} img/s   bf16/fp32 = {ratio:.2f}x "
        f"(median of {len(pairs)} alternated pairs)",
        flush=True,
    )
    return {"off": off_s, "bf16": bf16_s}


def size_ratio(steps: Steps, small: int, large: int, count: int) -> str:
    """A step at `small` px against one at `large` px, per amp, alternated."""
    return "   ".join(
        f"{amp} {median_ratio(alternated_pairs(steps(small, amp), steps(large, amp), count)):.2f}x"
        for amp in ("off", "bf16")
    )


def step_cost(steps: Steps, size: int, count: int) -> None:
    """Split a bf16 step into a per-step part and a per-image part, from batches of
    BATCH and twice that: T(b) = fixed + b * per_image. The fixed part (weight casts and
    layout reorders, the weight gradients of the 512-channel convolutions, the
    optimizer) does not shrink with the image, which is why small images are not
    proportionally cheaper."""
    small, large = BATCH, 2 * BATCH
    pairs = alternated_pairs(steps(size, "bf16", small), steps(size, "bf16", large), count)
    small_s, large_s = medians(pairs)
    per_image = (large_s - small_s) / (large - small)
    fixed = small_s - small * per_image
    relative = median_ratio([(b / large, a / small) for a, b in pairs])
    # T(b) grows with b, so a negative per-step part means the host's load changed between the sides.
    noise = "   NOISE: negative per-step part, rerun on a quiet machine" if fixed < 0 else ""
    print(
        f"bf16 step at {size:>3}px: batch {small} {small_s * 1000:.0f} ms, batch {large} "
        f"{large_s * 1000:.0f} ms: an image costs {relative:.2f}x "
        f"as much in a batch of {large} ({fixed * 1000:.0f} ms per step + "
        f"{per_image * 1000:.1f} ms per image){noise}",
        flush=True,
    )


def optimizer_step(fused: bool) -> Callable[[], object]:
    """One AdamW step over ResNet-18's parameters, with fixed gradients."""
    model = create_classifier("resnet18", 12)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3, fused=fused)
    optimizer.step()  # the moments are allocated on the first step
    return optimizer.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="timed step pairs per comparison")
    parser.add_argument("--smoke", action="store_true", help="a few steps at 32 px")
    args = parser.parse_args()
    device = select_device()
    native = cpu_has_native_bf16() if device.type == "cpu" else "n/a"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, ", end="")
    print(f"native CPU bf16 (AMX/AVX512-BF16): {native}")
    count = 2 if args.smoke else args.pairs
    sizes = (32, 64) if args.smoke else (64, 96, 128)
    with tempfile.TemporaryDirectory() as tmp:
        steps = Steps(Path(tmp))
        for size in sizes:
            throughput(steps, size, count)
        for size in sizes:
            step_cost(steps, size, count)
        # Progressive resizing pays off only as far as a small step is really cheaper.
        small, large = sizes[0], sizes[-1]
        print(
            f"step time at {small} px / at {large} px (pixels: {(small / large) ** 2:.2f}x): "
            + size_ratio(steps, small, large, count)
        )
    pairs = alternated_pairs(optimizer_step(True), optimizer_step(False), 2 if args.smoke else 20)
    fused, loop = medians(pairs)
    print(
        f"AdamW step, ResNet-18 (11.2M params): for-loop {loop * 1000:.1f} ms   fused "
        f"{fused * 1000:.1f} ms   fused/for-loop = {median_ratio(pairs):.2f}x"
    )


if __name__ == "__main__":
    main()
