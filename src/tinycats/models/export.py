"""ONNX export of both models, each verified against PyTorch before it is trusted.

The classifier graph takes normalised float images (see `normalize_images`) of shape
(batch, 3, S, S) named "images" and returns "logits" (batch, num_classes). The DiT graph
is the bare network: "x" (batch, 3, S, S), "t" (batch,) and "y" (batch,) → "prediction"
(batch, 3, S, S), whatever the network predicts (the metadata says which). Guidance and
the conversion of the prediction to a velocity belong to the caller's sampling loop, so
they are applied exactly once and in one place.

Every file carries what a consumer needs to use it (classes, preprocessing, prediction
type) as JSON in the ONNX metadata under `METADATA_KEY`; `read_metadata` reads it back.
Both graphs have a dynamic batch axis.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tinycats.errors import TinycatsError
from tinycats.models.flow import MIN_ONE_MINUS_T

ONNX_INSTALL_HINT = 'pip install "tinycats[onnx]"'
METADATA_KEY = "tinycats"
"""ONNX metadata_props key holding the export's JSON description."""
OPSET = 17


def require_onnx() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or a one-line error saying how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise TinycatsError(
            f"ONNX export needs onnx and onnxruntime ({err.name} is missing); "
            f"run `{ONNX_INSTALL_HINT}`"
        ) from None
    return onnx, onnxruntime


def export_onnx(
    model: nn.Module,
    image_size: int,
    path: Path,
    *,
    metadata: dict[str, Any] | None = None,
    opset: int = OPSET,
) -> float:
    """Write the classifier `model` as ONNX to `path`; return max |ONNX - PyTorch| over a check.

    The check runs onnxruntime on random batches of 2 and 3 (3 was never traced, so it
    proves the batch axis really is dynamic). The caller's model is not touched: a CPU
    float copy in eval mode is exported.
    """

    def inputs(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        return (torch.randn(batch, 3, image_size, image_size, generator=generator),)

    return _export_and_check(
        model, path, inputs, ["images"], ["logits"], metadata=metadata, opset=opset
    )


def export_dit_onnx(
    model: nn.Module,
    path: Path,
    *,
    metadata: dict[str, Any] | None = None,
    opset: int = OPSET,
) -> float:
    """Write a TinyDiT network as ONNX to `path`; return max |ONNX - PyTorch| over a check.

    The check feeds batches of 2 and 3 with times across [0, 1] and labels that include
    the null class, so the unconditional half of a guided step is covered too. The
    metadata always holds what a sampling loop needs: image_shape, null_class,
    prediction (what the network outputs: "v" a velocity, "x" the clean image), the
    noise_scale of x0 and the clip of 1 - t that turns an "x" output into a velocity
    (see flow.velocity_from_prediction).
    """
    args = model.args
    shape = (args.in_channels, args.image_size, args.image_size)
    network = {
        "image_shape": list(shape),
        "null_class": model.null_class,
        "prediction": model.prediction,
        "noise_scale": model.noise_scale,
        "min_one_minus_t": MIN_ONE_MINUS_T,
    }

    def inputs(batch: int, generator: torch.Generator) -> tuple[Tensor, ...]:
        x = torch.randn(batch, *shape, generator=generator)
        t = torch.rand(batch, generator=generator)
        y = torch.randint(0, args.num_classes + 1, (batch,), generator=generator)
        y[-1] = args.num_classes  # the null class
        return x, t, y

    return _export_and_check(
        model,
        path,
        inputs,
        ["x", "t", "y"],
        ["prediction"],
        metadata={**network, **(metadata or {})},
        opset=opset,
    )


def read_metadata(path: Path) -> dict[str, Any]:
    """The JSON description written with an export ({} for a file from elsewhere)."""
    onnx, _ = require_onnx()
    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def _export_and_check(
    model: nn.Module,
    path: Path,
    make_inputs: Callable[[int, torch.Generator], tuple[Tensor, ...]],
    input_names: list[str],
    output_names: list[str],
    *,
    metadata: dict[str, Any] | None,
    opset: int,
) -> float:
    onnx, ort = require_onnx()
    model = copy.deepcopy(model).cpu().float().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    # The TorchScript exporter, on purpose: it writes ONE self-contained file at the
    # requested opset, where the torch.export-based one (torch >= 2.9 default) splits
    # weights into a .data file and fails to down-convert to opset 17 (torch 2.14).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape asserts
        torch.onnx.export(
            model,
            make_inputs(2, generator),
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    if metadata:
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    max_diff = 0.0
    for batch in (2, 3):
        inputs = make_inputs(batch, generator)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        feed = {name: value.numpy() for name, value in zip(input_names, inputs, strict=True)}
        (got,) = session.run(output_names, feed)
        if got.shape != expected.shape:
            raise TinycatsError(
                f"exported ONNX gave shape {got.shape} for batch {batch}, expected "
                f"{expected.shape}; re-export with a newer torch/onnx"
            )
        max_diff = max(max_diff, float(abs(got - expected).max()))
    return max_diff
