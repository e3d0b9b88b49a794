"""Inference latency on this machine: PyTorch against onnxruntime, fp32 against int8.

The classifier (ResNet-18) at batch 1 and 32: PyTorch eager (NCHW), PyTorch
channels-last, onnxruntime fp32 and onnxruntime int8 (static, QDQ, calibrated on
training photos); the DiT: one 50-step guided sample in PyTorch and in onnxruntime.
p50/p95/p99 per call and the throughput at p50, the variants timed in alternation
(deploy/latency.py), so the ratios hold on a noisy host.

    python benchmarks/inference_latency.py --run RUN [--dit RUN] [--out DIR]   # trained runs
    python benchmarks/inference_latency.py          # fresh models at 128 px / DiT small at 64 px
    python benchmarks/inference_latency.py --smoke  # tiny sizes, few calls (seconds)

Weights do not change the cost of a dense network, so fresh models time like trained
ones; int8 is then calibrated on synthetic images. For the accuracy int8 costs, run
`tinycats export onnx RUN --int8` on a trained run. Same as `tinycats bench inference`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from tinycats.config import DiTConfig
from tinycats.data.synthetic import render_synthetic
from tinycats.deploy.latency import bench_classifier, bench_dit, bench_trained, format_rows
from tinycats.deploy.quantize import quantize_int8
from tinycats.models.classifier import create_classifier
from tinycats.models.dit import PRESETS, TinyDiT, dit_args_from_config
from tinycats.models.export import export_dit_onnx, export_onnx

NUM_CLASSES = 12


def synthetic_images(count: int, size: int) -> np.ndarray:
    """(count, 3, size, size) uint8: tinycats' procedural images, every class in turn."""
    return np.stack(
        [render_synthetic(i % 4, i, size, seed=0).transpose(2, 0, 1) for i in range(count)]
    )


def fresh_rows(args: argparse.Namespace, scratch: Path) -> list:
    torch.manual_seed(0)
    classifier = create_classifier("resnet18", NUM_CLASSES).eval()
    images = synthetic_images(32 if args.smoke else 128, args.size)
    fp32, int8 = scratch / "classifier.onnx", scratch / "int8.onnx"
    export_onnx(classifier, args.size, fp32)
    quantize_int8(fp32, int8, images)
    rows = bench_classifier(
        classifier, fp32, int8, images, batches=args.batches, rounds=args.rounds
    )

    preset = "test" if args.smoke else "small"
    dit_args = dit_args_from_config(DiTConfig(preset=preset), PRESETS[preset]["image_size"], 12)
    dit = TinyDiT(dit_args).eval()
    with torch.no_grad():  # leave adaLN-zero: give the zero layers values, as after training
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.02)
    export_dit_onnx(dit, scratch / "dit.onnx")
    rows += bench_dit(dit, scratch / "dit.onnx", steps=args.steps, rounds=args.dit_rounds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained classifier (or DiT) run id or folder")
    parser.add_argument("--dit", help="a trained DiT run to time as well")
    parser.add_argument("--out", default="tinycats-out", help="store root of the runs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, few calls")
    parser.add_argument("--threads", type=int, help="threads for every runtime (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's count
    args.size = 32 if args.smoke else 128
    args.batches = (1, 4) if args.smoke else (1, 32)
    args.rounds = 3 if args.smoke else 30
    args.dit_rounds = 2 if args.smoke else 5
    args.steps = 4 if args.smoke else 50
    print(f"torch threads: {torch.get_num_threads()} (onnxruntime gets the same)")

    if args.run or args.dit:
        from tinycats.storage import LocalStore
        from tinycats.train.inference import load_trained_model

        store = LocalStore(Path(args.out))
        loaded = [load_trained_model(store, ref) for ref in (args.run, args.dit) if ref]
        by_task = {t.config.task: t for t in loaded}
        rows = bench_trained(
            by_task.get("classifier"),
            by_task.get("dit"),
            store,
            rounds=args.rounds,
            dit_rounds=args.dit_rounds,
            batches=args.batches,
            dit_steps=args.steps,
        )
    else:
        with tempfile.TemporaryDirectory() as scratch:
            rows = fresh_rows(args, Path(scratch))
    print(format_rows(rows))


if __name__ == "__main__":
    main()
