"""Inference latency, measured side by side: PyTorch (eager, channels-last) against
onnxruntime (fp32, int8) for the classifier, PyTorch against onnxruntime for a guided DiT
sample.

The variants are timed in alternation, one call each per round in a rotating order, so
a slow spell of a shared host lands on all of them alike instead of on whichever ran
last. Every runtime gets the same number of threads. Reported per variant and batch
size: p50/p95/p99 of the per-call wall time and the throughput that p50 implies.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinycats.deploy.onnx_run import OrtClassifier, OrtDiT, normalize_uint8
from tinycats.storage import Store
from tinycats.train.inference import TrainedModel

CLASSIFIER_BATCHES = (1, 32)
DIT_STEPS = 50


@dataclass
class LatencyRow:
    model: str
    variant: str
    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    items_per_s: float  # images classified (or samples drawn) per second at p50
    calls: int
    max_abs_diff: float | None = None  # output vs the group's first variant, same input

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_alternating(
    variants: dict[str, Callable[[], object]], rounds: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds per call of each variant over `rounds` rounds (after `warmup` untimed ones).

    Round r calls the variants starting at index r mod n, so none is always first.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            started = time.perf_counter()
            variants[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def summarise(model: str, batch: int, times: dict[str, list[float]]) -> list[LatencyRow]:
    rows = []
    for variant, seconds in times.items():
        p50, p95, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 95, 99])
        rows.append(
            LatencyRow(
                model=model,
                variant=variant,
                batch=batch,
                p50_ms=round(float(p50), 3),
                p95_ms=round(float(p95), 3),
                p99_ms=round(float(p99), 3),
                items_per_s=round(batch / (p50 / 1e3), 2),
                calls=len(seconds),
            )
        )
    return rows


def classifier_variants(
    model: nn.Module, fp32_path: Path, int8_path: Path, images_uint8: np.ndarray
) -> dict[str, Callable[[], object]]:
    """The four ways to classify one batch; each does its own input conversion."""
    eager = copy.deepcopy(model).cpu().float().eval().to(memory_format=torch.contiguous_format)
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    x = torch.from_numpy(normalize_uint8(images_uint8))  # (B, 3, S, S) NCHW
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp32, int8 = (
        OrtClassifier(fp32_path, hflip_tta=False),
        OrtClassifier(int8_path, hflip_tta=False),
    )

    def torch_call(m: nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return m(inputs)

        return call

    return {
        "pytorch eager": torch_call(eager, x),
        "pytorch channels-last": torch_call(channels_last, x_cl),
        "onnxruntime fp32": lambda: fp32.logits(images_uint8),
        "onnxruntime int8": lambda: int8.logits(images_uint8),
    }


def bench_classifier(
    model: nn.Module,
    fp32_path: Path,
    int8_path: Path,
    images_uint8: np.ndarray,
    *,
    batches: tuple[int, ...] = CLASSIFIER_BATCHES,
    rounds: int = 30,
) -> list[LatencyRow]:
    """Rows for every variant at every batch size (images are cycled to fill a batch)."""
    rows = []
    for batch in batches:
        picked = images_uint8[np.arange(batch) % len(images_uint8)]
        times = time_alternating(classifier_variants(model, fp32_path, int8_path, picked), rounds)
        rows += summarise("classifier", batch, times)
    return rows


def bench_dit(
    model: nn.Module,
    onnx_path: Path,
    *,
    steps: int = DIT_STEPS,
    cfg_scale: float = 3.0,
    rounds: int = 5,
) -> list[LatencyRow]:
    """One guided sample (a network batch of 2 per step), PyTorch against onnxruntime; the
    onnxruntime row also says how far its sample lies from PyTorch's for the same noise."""
    from tinycats.models.flow import sample_from_noise

    network = copy.deepcopy(model).cpu().float().eval()
    ort_network = OrtDiT(onnx_path)
    args = network.args
    y = torch.zeros(1, dtype=torch.long)
    shape = (1, args.in_channels, args.image_size, args.image_size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def draw(net: Any) -> Callable[[], object]:
        return lambda: sample_from_noise(
            net, y, noise, steps=steps, cfg_scale=cfg_scale, sampler="euler"
        )

    variants = {"pytorch": draw(network), "onnxruntime": draw(ort_network)}
    reference, exported = (variants[name]() for name in variants)  # also the warm-up
    times = time_alternating(variants, rounds, warmup=0)
    rows = summarise(f"dit {steps}-step guided sample", 1, times)
    rows[1].max_abs_diff = float((exported - reference).abs().max())
    return rows


def format_rows(rows: list[LatencyRow]) -> str:
    """A plain table, with each variant's p50 relative to the first row of its group (and,
    where measured, how far its output lies from that row's)."""
    lines = [
        f"{'model':<32} {'variant':<24} {'batch':>5} {'p50 ms':>10} {'p95 ms':>10} "
        f"{'p99 ms':>10} {'items/s':>10} {'p50 vs first':>12} {'max |diff|':>10}"
    ]
    first: dict[tuple[str, int], float] = {}
    for row in rows:
        base = first.setdefault((row.model, row.batch), row.p50_ms)
        lines.append(
            f"{row.model:<32} {row.variant:<24} {row.batch:>5} {row.p50_ms:>10.2f} "
            f"{row.p95_ms:>10.2f} {row.p99_ms:>10.2f} {row.items_per_s:>10.1f} "
            f"{row.p50_ms / base:>11.2f}x"
            + ("" if row.max_abs_diff is None else f" {row.max_abs_diff:>10.1e}")
        )
    return "\n".join(lines)


def bench_trained(
    classifier: TrainedModel | None,
    dit: TrainedModel | None,
    store: Store,
    *,
    rounds: int = 30,
    dit_rounds: int = 5,
    batches: tuple[int, ...] = CLASSIFIER_BATCHES,
    dit_steps: int = DIT_STEPS,
) -> list[LatencyRow]:
    """Export, quantise (calibrated on the run's training photos) and time trained models."""
    from tinycats.config import Int8Config
    from tinycats.deploy.onnx_export import export_classifier_onnx, export_dit_network_onnx
    from tinycats.deploy.quantize import evenly_spaced, quantize_int8
    from tinycats.train.evaluation import eval_dataset

    rows: list[LatencyRow] = []
    with tempfile.TemporaryDirectory() as scratch:
        if classifier is not None:
            train, _ = eval_dataset(classifier, store, "train")
            settings = Int8Config()  # the scheme `export onnx --int8` writes
            images = evenly_spaced(train, settings.calibration_images)
            fp32, int8 = Path(scratch) / "classifier.onnx", Path(scratch) / "int8.onnx"
            export_classifier_onnx(classifier, fp32)
            quantize_int8(fp32, int8, images, settings)
            rows += bench_classifier(
                classifier.model, fp32, int8, images, batches=batches, rounds=rounds
            )
        if dit is not None:
            path = Path(scratch) / "dit.onnx"
            export_dit_network_onnx(dit, path)
            rows += bench_dit(
                dit.model,
                path,
                steps=dit_steps,
                cfg_scale=dit.config.dit.cfg_scale,
                rounds=dit_rounds,
            )
    return rows
