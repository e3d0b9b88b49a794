"""GPU smoke benchmark: both models on one CUDA device, as a cloud run would train them.

For the classifier (ResNet-18, 128 px) and the DiT (small preset, 64 px), on synthetic
data so nothing is downloaded, with the device policy's AMP dtype (bf16 where the GPU
does it natively, else fp16 with a grad scaler) and channels-last for the classifier:

- img/s of the engine (`Trainer.fit`) and of a bare AMP loop over the same model,
  batches and optimizer, as the marginal cost of N more steps (T(2N) - T(N), so set-up
  and the final checkpoint cancel), and their ratio engine/bare (goal >= 0.95);
- peak GPU memory of the engine run;
- whether a run stopped half-way and resumed ends with the same weights as an
  uninterrupted one, in deterministic mode (cuDNN deterministic, deterministic
  algorithms where torch has them: where it has none it warns, and the check reports
  the largest difference instead of failing).

Sized for well under 6 minutes on one H100-class GPU. On a machine without CUDA it
prints why it skips and exits 0. NOTE: written without access to a GPU; it has only
been run on its skip path so far (docs/benchmarks.md says so).

    python benchmarks/gpu_smoke.py            # on a GPU machine (e.g. `modal shell --gpu H100`)
    python benchmarks/gpu_smoke.py --smoke    # fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault(
    "CUBLAS_WORKSPACE_CONFIG", ":4096:8"
)  # before CUDA starts: deterministic GEMMs

import torch
from safetensors.torch import load_file

from tinycats.config import TrainConfig, build_config
from tinycats.storage import CheckpointManager, LocalStore
from tinycats.train import PreemptionGuard
from tinycats.train.device import autocast
from tinycats.train.optimizer import build_optimizer
from tinycats.train.run import build_trainer


def cases(root: Path, smoke: bool) -> dict[str, TrainConfig]:
    data = [f"data.dir={json.dumps(str(root / 'data'))}", "data.synthetic_per_class=256"]
    common = ["optim.amp='auto'", "checkpoint.async_save=true"]
    return {
        "classifier resnet18 128px": build_config(
            "classifier",
            overrides=[*data, *common, "data.image_size=128", "optim.batch_size=128"],
        ),
        "dit small 64px": build_config(
            "dit",
            overrides=[
                *data,
                *common,
                "dit.preset=small",
                "data.image_size=64",
                "dit.preview_per_class=0",
                f"optim.batch_size={64 if smoke else 128}",
            ],
        ),
    }


def synchronized(fn) -> float:
    """Seconds `fn()` takes, with the GPU's queue drained on both sides."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def engine_seconds(config: TrainConfig, root: Path, steps: int, run_id: str) -> float:
    config = config.model_copy(deep=True)
    config.optim.max_steps = config.checkpoint.every_steps = steps
    trainer = build_trainer(config, LocalStore(root), run_id, progress=False)
    return synchronized(trainer.fit)


def bare_seconds(config: TrainConfig, root: Path, steps: int) -> float:
    """The AMP loop a tutorial would write, over the engine's own model and batches."""
    trainer = build_trainer(config, LocalStore(root), "bare-setup", progress=False)
    model, task, batches, dtype = trainer.model, trainer.task, trainer.batches, trainer.amp_dtype
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    model.train()

    def loop() -> None:
        for _ in range(steps):
            images, labels = batches.next()
            images, labels = images.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            with autocast(trainer.device, dtype):
                loss, _ = task.loss(model, images, labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

    return synchronized(loop)


def throughput(name: str, config: TrainConfig, root: Path, steps: int) -> dict[str, float]:
    tag = "".join(c if c.isalnum() else "-" for c in name)
    engine_seconds(config, root, 2, f"{tag}-warmup")  # cuDNN autotuning, allocator, kernels
    torch.cuda.reset_peak_memory_stats()
    engine = engine_seconds(config, root, 2 * steps, f"{tag}-2n") - engine_seconds(
        config, root, steps, f"{tag}-n"
    )
    peak_gb = torch.cuda.max_memory_allocated() / 1e9
    bare = bare_seconds(config, root, 2 * steps) - bare_seconds(config, root, steps)
    images = steps * config.optim.batch_size
    trainer = build_trainer(config, LocalStore(root), f"{tag}-probe", progress=False)
    row = {
        "engine_img_s": images / engine,
        "bare_img_s": images / bare,
        "ratio": bare / engine,
        "peak_gb": peak_gb,
        "amp": str(trainer.amp_dtype).removeprefix("torch."),
    }
    print(
        f"{name:<28} {row['amp']:>8}  engine {row['engine_img_s']:8.1f} img/s  bare "
        f"{row['bare_img_s']:8.1f} img/s  engine/bare {row['ratio']:.3f}x (goal >= 0.95)  "
        f"peak {peak_gb:.2f} GB",
        flush=True,
    )
    return row


class StopAt(PreemptionGuard):
    """Asks the engine to stop after `step` steps (the engine polls once per step)."""

    def __init__(self, step: int) -> None:
        super().__init__(signals=())
        self.step, self.polls = step, 0

    @property
    def requested(self) -> bool:
        self.polls += 1
        if self.polls == self.step:
            self.request("gpu_smoke stop")
        return super().requested


def final_weights(root: Path, config: TrainConfig, run_id: str) -> dict[str, torch.Tensor]:
    info = CheckpointManager(LocalStore(root), config.task, run_id).latest()
    return load_file(info.path / "model.safetensors")


def resume_matches(name: str, config: TrainConfig, root: Path, steps: int) -> bool:
    """Uninterrupted vs stopped at steps/2 and resumed, in deterministic mode."""
    config = config.model_copy(deep=True)
    config.optim.max_steps, config.checkpoint.every_steps = steps, steps
    tag = "".join(c if c.isalnum() else "-" for c in name)
    build_trainer(config, LocalStore(root), f"{tag}-whole", progress=False).fit()
    stopped = build_trainer(
        config, LocalStore(root), f"{tag}-split", guard=StopAt(steps // 2), progress=False
    ).fit()
    resumed = build_trainer(config, LocalStore(root), f"{tag}-split", progress=False).fit()
    whole = final_weights(root, config, f"{tag}-whole")
    split = final_weights(root, config, f"{tag}-split")
    worst = max((whole[k].float() - split[k].float()).abs().max().item() for k in whole)
    equal = all(torch.equal(whole[k], split[k]) for k in whole)
    print(
        f"{name:<28} resume: stopped at {stopped.step}, resumed to {resumed.step}: "
        f"{'bitwise equal' if equal else f'differs, max |diff| {worst:.3g}'}",
        flush=True,
    )
    return equal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="N in T(2N) - T(N)")
    parser.add_argument("--smoke", action="store_true", help="fewer steps")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            f"SKIP gpu_smoke: no CUDA device (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); it measures GPU training and needs one"
        )
        return 0
    steps = 6 if args.smoke else args.steps
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    print(
        f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{steps} steps per side",
        flush=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, config in cases(root, args.smoke).items():
            throughput(name, config, root, steps)
            resume_matches(name, config, root, max(4, steps // 2) * 2)
    print(f"total {time.perf_counter() - started:.0f} s (goal < 360 s on one H100-class GPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
