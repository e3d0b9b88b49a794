"""Which int8 scheme costs the classifier least, judged on training photos only.

The run's training photos (prepared as evaluation prepares them) are split in two by
position: even ones are the calibration pool, odd ones are held out. Every scheme is
calibrated on photos evenly spaced over the pool and judged on the held-out half against
the fp32 model, side by side: top-1 of both, their agreement (the share of photos whose
top-1 is the same) and the mean total-variation distance between the two models'
probabilities (finer than agreement: it moves before a top-1 flips), and the time a
photo takes (a rough guide on a shared host: benchmarks/inference_latency.py times
side by side). The test split is
never read: the scheme chosen here becomes `Int8Config`'s default, and `tinycats export
onnx RUN --int8` then measures it on the test split once.

    python benchmarks/int8_schemes.py --run RUN [--out DIR] [--threads 1]
    python benchmarks/int8_schemes.py --smoke   # a fresh 32 px model on synthetic images

The levers are onnxruntime's: calibration method (MinMax, Entropy, Percentile) and photo
count, per-channel or per-tensor weights, QDQ or QOperator, reduce_range, and the first
convolution and/or the final fc left in float, int8 or uint8 activations.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinycats.config import Int8Config
from tinycats.deploy.onnx_run import OrtClassifier
from tinycats.deploy.quantize import BATCH, quantize_int8

BASELINE = Int8Config(
    calibration_images=128,
    calibration_method="minmax",
    per_channel=True,
    quant_format="qdq",
    activations="int8",
    reduce_range=False,
    keep_float=[],
)
"""onnxruntime's advice for CNNs on x86 (QDQ, per-channel, s8s8, MinMax): the first
default, which every other scheme changes one or two levers of."""


def schemes(
    calibration_counts: tuple[int, ...], combine: list[str], only: list[str] | None
) -> dict[str, Int8Config]:
    """The baseline, one lever changed at a time, then the combinations asked for
    ("entropy+keep head float"), restricted to `only` when given."""
    change = {
        "baseline": {},
        "per-tensor": {"per_channel": False},
        "entropy": {"calibration_method": "entropy"},
        "percentile": {"calibration_method": "percentile"},
        "qoperator": {"quant_format": "qoperator"},
        "qoperator, uint8 activations": {"quant_format": "qoperator", "activations": "uint8"},
        "uint8 activations": {"activations": "uint8"},
        "reduce_range": {"reduce_range": True},
        "keep stem float": {"keep_float": ["stem"]},
        "keep head float": {"keep_float": ["head"]},
        "keep stem+head float": {"keep_float": ["stem", "head"]},
        **{
            f"{n} calibration photos": {"calibration_images": n}
            for n in calibration_counts
            if n != BASELINE.calibration_images
        },
    }
    for names in combine:
        change[names] = {k: v for name in names.split("+") for k, v in change[name].items()}
    chosen = [name for name in change if only is None or name in only]
    return {name: BASELINE.model_copy(update=change[name]) for name in chosen}


def all_logits(model: OrtClassifier, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [model.logits(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def evenly(images: np.ndarray, count: int) -> np.ndarray:
    picked = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    return images[picked]


def screen(
    fp32_path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    candidates: dict[str, Int8Config],
    scratch: Path,
) -> None:
    """Quantise with each scheme and print its figures beside the fp32 model's."""
    pool, held_out, held_labels = images[0::2], images[1::2], labels[1::2]
    started = time.perf_counter()
    reference = all_logits(OrtClassifier(fp32_path), held_out)
    fp32_ms = 1e3 * (time.perf_counter() - started) / len(held_out)
    fp32_top1, fp32_probs = reference.argmax(axis=1), softmax(reference)
    print(
        f"calibration pool: {len(pool)} training photos; held out: {len(held_out)}; "
        f"fp32 top-1 on the held-out photos {(fp32_top1 == held_labels).mean():.2%}, "
        f"{fp32_ms:.1f} ms a photo (batches of {BATCH}, the run's mirror averaging included)"
    )
    print(
        f"{'scheme':<30} {'calib':>5} {'int8 top-1':>10} {'Δ points':>9} {'agree':>7} "
        f"{'mean TV':>8} {'MB':>6} {'ms/photo':>8} {'quantise s':>10}  (* Int8Config's default)"
    )
    for name, settings in candidates.items():
        path = scratch / f"{name.replace(' ', '_')}.onnx"
        started = time.perf_counter()
        quantize_int8(fp32_path, path, evenly(pool, settings.calibration_images), settings)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        logits = all_logits(OrtClassifier(path), held_out)
        ms = 1e3 * (time.perf_counter() - started) / len(held_out)
        top1 = logits.argmax(axis=1)
        delta = 100 * ((top1 == held_labels).mean() - (fp32_top1 == held_labels).mean())
        tv = 0.5 * np.abs(softmax(logits) - fp32_probs).sum(axis=1).mean()
        print(
            f"{name:<30} {min(settings.calibration_images, len(pool)):>5} "
            f"{(top1 == held_labels).mean():>10.2%} {delta:>+9.2f} "
            f"{(top1 == fp32_top1).mean():>7.2%} {tv:>8.4f} "
            f"{path.stat().st_size / 1e6:>6.1f} {ms:>8.1f} {seconds:>10.1f}"
            + ("  *" if settings == Int8Config() else ""),
            flush=True,
        )


def trained_inputs(args: argparse.Namespace, scratch: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A run's fp32 ONNX and its training photos (uint8, as evaluation prepares them)."""
    from tinycats.deploy.onnx_export import export_classifier_onnx
    from tinycats.storage import LocalStore
    from tinycats.train.evaluation import eval_dataset
    from tinycats.train.inference import load_trained_model

    store = LocalStore(Path(args.out))
    trained = load_trained_model(store, args.run)
    train, _ = eval_dataset(trained, store, "train")
    images = np.stack([train[i][0].numpy() for i in range(len(train))])
    labels = np.asarray([int(label) for label in train.targets])
    fp32 = scratch / "fp32.onnx"
    export_classifier_onnx(trained, fp32)
    print(f"run {trained.run_id}: {trained.config.eval_image_size} px, {len(train)} train photos")
    return fp32, images, labels


def smoke_inputs(scratch: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A fresh ResNet-18 at 32 px on tinycats' synthetic images (a run check, not a figure)."""
    from tinycats.data.synthetic import render_synthetic
    from tinycats.models.classifier import create_classifier
    from tinycats.models.export import export_onnx

    torch.manual_seed(0)
    labels = np.arange(32) % 4
    images = np.stack(
        [render_synthetic(int(c), i, 32, seed=0).transpose(2, 0, 1) for i, c in enumerate(labels)]
    )
    fp32 = scratch / "fp32.onnx"
    export_onnx(create_classifier("resnet18", 4).eval(), 32, fp32)
    return fp32, images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained classifier run id or folder")
    parser.add_argument("--out", default="tinycats-out", help="store root of the run")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: torch's)")
    parser.add_argument(
        "--calibration-counts",
        default="32,128,256",
        help="calibration photo counts to compare (comma-separated)",
    )
    parser.add_argument(
        "--combine",
        action="append",
        default=[],
        help="also a scheme combining others' changes, e.g. 'entropy+keep head float'",
    )
    parser.add_argument(
        "--only", action="append", help="screen only these schemes (repeatable; by name)"
    )
    parser.add_argument("--smoke", action="store_true", help="a fresh tiny model, seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # onnxruntime sessions take torch's count
    if not args.run and not args.smoke:
        parser.error("give --run RUN (a trained classifier) or --smoke")
    counts = tuple(int(n) for n in args.calibration_counts.split(","))
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        fp32, images, labels = (
            smoke_inputs(scratch) if args.smoke else trained_inputs(args, scratch)
        )
        candidates = schemes((8,) if args.smoke else counts, args.combine, args.only)
        screen(fp32, images, labels, candidates, scratch)


if __name__ == "__main__":
    main()
