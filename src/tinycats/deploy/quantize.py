"""Static int8 quantisation of the classifier with onnxruntime, measured before it is trusted.

Calibration sees training photos only, prepared as inference prepares them (the run's
eval size and central crop), so activation ranges are those of real inputs; the test
split is used once, afterwards, to measure what int8 cost: top-1 of the fp32 and the int8
model side by side on the same images, their agreement, and the file sizes. The figures
are printed, written next to the model and into the run record.

Settings (onnxruntime's recommendation for CNNs on x86): QDQ format, per-channel int8
weights, int8 activations, MinMax calibration; the exporter has already folded batch
norm into the convolutions.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinycats.deploy.onnx_export import export_classifier_onnx
from tinycats.deploy.onnx_run import OrtClassifier, normalize_uint8
from tinycats.errors import TinycatsError
from tinycats.models.export import require_onnx
from tinycats.storage import RunRegistry, Store
from tinycats.storage.atomic import write_json_atomic
from tinycats.train.evaluation import eval_dataset
from tinycats.train.inference import TrainedModel

CALIBRATION_METHOD = "minmax"
CALIBRATION_IMAGES = 128
"""Training photos used to calibrate (evenly spaced over the train split)."""
BATCH = 32


@dataclass
class Int8Report:
    split: str
    n: int
    top1_fp32: float
    top1_int8: float
    delta_points: float  # (int8 - fp32) top-1, in percentage points
    agreement: float  # fraction of images whose top-1 is the same in both
    calibration_images: int
    calibration_method: str
    bytes_fp32: int
    bytes_int8: int
    size_ratio: float  # int8 / fp32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evenly_spaced(dataset: torch.utils.data.Dataset, count: int) -> np.ndarray:
    """(count, 3, S, S) uint8 images spread over the whole dataset (every class, no seed)."""
    indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return np.stack([dataset[int(i)][0].numpy() for i in indices])


def quantize_int8(fp32_path: Path, int8_path: Path, calibration_uint8: np.ndarray) -> None:
    """Write the int8 model of `fp32_path`, calibrated on the given uint8 images."""
    require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = np.array_split(calibration_uint8, max(1, len(calibration_uint8) // BATCH))
            self._feeds = iter([{"images": normalize_uint8(b)} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    _copy_metadata(fp32_path, int8_path)


def _copy_metadata(source: Path, target: Path) -> None:
    """Quantisation drops metadata_props; the int8 file must describe itself too."""
    onnx, _ = require_onnx()
    src, dst = onnx.load(str(source)), onnx.load(str(target))
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    onnx.save(dst, str(target))


def top1_predictions(model: OrtClassifier, dataset: torch.utils.data.Dataset) -> np.ndarray:
    """Top-1 class index of every image of `dataset`, in order."""
    predictions = []
    for start in range(0, len(dataset), BATCH):
        images = np.stack(
            [dataset[i][0].numpy() for i in range(start, min(start + BATCH, len(dataset)))]
        )
        predictions.append(model.logits(images).argmax(axis=1))
    return np.concatenate(predictions)


def measure_int8(
    fp32_path: Path,
    int8_path: Path,
    test: torch.utils.data.Dataset,
    *,
    split: str,
    calibration_images: int,
) -> Int8Report:
    """Both models on every image of `test`, side by side."""
    labels = np.asarray([int(label) for label in test.targets])
    fp32 = top1_predictions(OrtClassifier(fp32_path), test)
    int8 = top1_predictions(OrtClassifier(int8_path), test)
    top1_fp32, top1_int8 = float((fp32 == labels).mean()), float((int8 == labels).mean())
    bytes_fp32, bytes_int8 = fp32_path.stat().st_size, int8_path.stat().st_size
    return Int8Report(
        split=split,
        n=len(labels),
        top1_fp32=top1_fp32,
        top1_int8=top1_int8,
        delta_points=round(100 * (top1_int8 - top1_fp32), 2),
        agreement=float((fp32 == int8).mean()),
        calibration_images=calibration_images,
        calibration_method=CALIBRATION_METHOD,
        bytes_fp32=bytes_fp32,
        bytes_int8=bytes_int8,
        size_ratio=round(bytes_int8 / bytes_fp32, 4),
    )


def export_int8(
    trained: TrainedModel,
    store: Store,
    output: Path,
    *,
    split: str = "test",
    calibration_images: int = CALIBRATION_IMAGES,
) -> Int8Report:
    """Quantise the classifier to `output`, measure it on `split`, and record the figures
    (next to the model as <output>.json, and in the run record under exports.onnx_int8)."""
    calibration, _ = eval_dataset(trained, store, "train")
    test, _ = eval_dataset(trained, store, split)
    output = Path(output)
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        export_classifier_onnx(trained, fp32_path)
        images = evenly_spaced(calibration, calibration_images)
        output.parent.mkdir(parents=True, exist_ok=True)
        quantize_int8(fp32_path, output, images)
        report = measure_int8(fp32_path, output, test, split=split, calibration_images=len(images))
    write_json_atomic(output.with_suffix(".json"), report.to_dict())
    # A checkpoint or exported folder may have no run record here: the JSON file suffices.
    with contextlib.suppress(TinycatsError):
        RunRegistry(store).update(trained.run_id, exports={"onnx_int8": report.to_dict()})
    return report
