"""ONNX export of the classifier, verified against PyTorch before it is trusted.

The exported graph takes normalised float images (see `normalize_images`) of shape
(batch, 3, image_size, image_size) named "images" with a dynamic batch axis, and
returns "logits" (batch, num_classes).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from tinycats.errors import TinycatsError

ONNX_INSTALL_HINT = 'pip install "tinycats[onnx]"'


def _require_onnx() -> tuple[object, object]:
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise TinycatsError(
            f"ONNX export needs onnx and onnxruntime ({err.name} is missing); "
            f"run `{ONNX_INSTALL_HINT}`"
        ) from None
    return onnx, onnxruntime


def export_onnx(model: nn.Module, image_size: int, path: Path, *, opset: int = 17) -> float:
    """Write `model` as ONNX to `path` and return the max |ONNX - PyTorch| over a check.

    The check runs onnxruntime on random batches of 2 and 3 (3 was never traced, so it
    proves the batch axis really is dynamic). The caller's model is not touched: a CPU
    float copy in eval mode is exported.
    """
    onnx, ort = _require_onnx()
    model = copy.deepcopy(model).cpu().float().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, image_size, image_size)
    # The TorchScript exporter, on purpose: for a CNN it writes ONE self-contained file at
    # the requested opset, where the torch.export-based one (torch >= 2.9 default) splits
    # weights into a .data file and fails to down-convert to opset 17 (torch 2.14).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    max_diff = 0.0
    for batch in (2, 3):
        images = torch.randn(batch, 3, image_size, image_size, generator=generator)
        with torch.no_grad():
            expected = model(images).numpy()
        (got,) = session.run(["logits"], {"images": images.numpy()})
        if got.shape != expected.shape:
            raise TinycatsError(
                f"exported ONNX gave shape {got.shape} for batch {batch}, expected "
                f"{expected.shape}; re-export with a newer torch/onnx"
            )
        max_diff = max(max_diff, float(abs(got - expected).max()))
    return max_diff
