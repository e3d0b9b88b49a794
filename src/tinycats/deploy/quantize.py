"""Static int8 quantisation of the classifier with onnxruntime, measured before it is trusted.

Calibration sees training photos only, prepared as inference prepares them (the run's
eval size and central crop), so activation ranges are those of real inputs; the test
split is used once, afterwards, to measure what int8 cost: top-1 of the fp32 and the int8
model side by side on the same images, their agreement, and the file sizes. The figures
are printed, written next to the model and into the run record.

The scheme (calibration method and photos, per-channel weights, QDQ or QOperator,
reduce_range, layers kept in float) is an `Int8Config`; its defaults were chosen on
training photos held out from calibration (benchmarks/int8_schemes.py), never on the
test split. The exporter has already folded batch norm into the convolutions.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinycats.config import Int8Config
from tinycats.deploy.onnx_export import export_classifier_onnx
from tinycats.deploy.onnx_run import OrtClassifier, normalize_uint8
from tinycats.errors import TinycatsError
from tinycats.models.export import require_onnx
from tinycats.storage import RunRegistry, Store
from tinycats.storage.atomic import write_json_atomic
from tinycats.train.evaluation import eval_dataset
from tinycats.train.inference import TrainedModel

BATCH = 32


@dataclass
class Int8Report:
    split: str
    n: int
    step: int  # the checkpoint measured
    top1_fp32: float
    top1_int8: float
    delta_points: float  # (int8 - fp32) top-1, in percentage points
    agreement: float  # fraction of images whose top-1 is the same in both
    calibration_images: int
    scheme: dict[str, Any]  # the Int8Config it was quantised with
    bytes_fp32: int
    bytes_int8: int
    size_ratio: float  # int8 / fp32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evenly_spaced(dataset: torch.utils.data.Dataset, count: int) -> np.ndarray:
    """(count, 3, S, S) uint8 images spread over the whole dataset (every class, no seed)."""
    indices = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return np.stack([dataset[int(i)][0].numpy() for i in indices])


def float_node_names(model: Any, keep_float: list[str]) -> list[str]:
    """Names of the graph's nodes that `keep_float` names: 'stem' is the first convolution
    (in the graph's topological order), 'head' the last Gemm/MatMul (the fc)."""
    nodes = list(model.graph.node)
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    linears = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    chosen = {"stem": convs[:1], "head": linears[-1:]}
    return [name for layer in keep_float for name in chosen[layer]]


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration_uint8: np.ndarray,
    settings: Int8Config | None = None,
) -> None:
    """Write the int8 model of `fp32_path`, calibrated on the given uint8 images."""
    onnx, _ = require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = settings or Int8Config()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    activations = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = np.array_split(calibration_uint8, max(1, len(calibration_uint8) // BATCH))
            self._feeds = iter([{"images": normalize_uint8(b)} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        excluded = float_node_names(onnx.load(str(prepared)), settings.keep_float)
        with contextlib.redirect_stdout(io.StringIO()):  # calibrators print progress
            quantize_static(
                str(prepared),
                str(int8_path),
                Reader(),
                quant_format=formats[settings.quant_format],
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=activations[settings.activations],
                weight_type=QuantType.QInt8,
                calibrate_method=methods[settings.calibration_method],
                nodes_to_exclude=excluded,
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
    settings: Int8Config,
    step: int,
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
        step=step,
        top1_fp32=top1_fp32,
        top1_int8=top1_int8,
        delta_points=round(100 * (top1_int8 - top1_fp32), 2),
        agreement=float((fp32 == int8).mean()),
        calibration_images=calibration_images,
        scheme=settings.model_dump(mode="json"),
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
    settings: Int8Config | None = None,
) -> Int8Report:
    """Quantise the classifier to `output`, measure it on `split`, and record the figures
    (next to the model as <output>.json, and in the run record under exports.onnx_int8)."""
    settings = settings or Int8Config()
    calibration, _ = eval_dataset(trained, store, "train")
    test, _ = eval_dataset(trained, store, split)
    output = Path(output)
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        export_classifier_onnx(trained, fp32_path)
        images = evenly_spaced(calibration, settings.calibration_images)
        output.parent.mkdir(parents=True, exist_ok=True)
        quantize_int8(fp32_path, output, images, settings)
        report = measure_int8(
            fp32_path,
            output,
            test,
            split=split,
            calibration_images=len(images),
            settings=settings,
            step=trained.info.step,
        )
    write_json_atomic(output.with_suffix(".json"), report.to_dict())
    # A checkpoint or exported folder may have no run record here: the JSON file suffices.
    with contextlib.suppress(TinycatsError):
        RunRegistry(store).update(trained.run_id, exports={"onnx_int8": report.to_dict()})
    return report
