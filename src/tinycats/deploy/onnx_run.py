"""Run the exported ONNX models with onnxruntime, exactly as the PyTorch path runs them.

The classifier gets the same normalisation (and mirror averaging) as `classify`; the
DiT network is wrapped as a callable with the PyTorch model's interface, so the very
same sampling loop (`flow.sample_from_noise`) drives it: the prediction → velocity
conversion and guidance happen once, in that loop, whichever runtime runs the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tinycats.models.classifier import IMAGENET_MEAN, IMAGENET_STD
from tinycats.models.export import read_metadata, require_onnx


def ort_session(path: Path, threads: int | None = None) -> Any:
    """A CPU onnxruntime session; `threads` intra-op threads (default: torch's count, so
    side-by-side timings give both runtimes the same cores)."""
    _, ort = require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def normalize_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) uint8 → float32 normalised as `normalize_images` does, in numpy."""
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((images.astype(np.float32) / np.float32(255.0) - mean) / std).astype(np.float32)


class OrtClassifier:
    """An exported classifier in onnxruntime: uint8 images in, logits out."""

    def __init__(self, path: Path, *, threads: int | None = None, hflip_tta: bool | None = None):
        self.path = Path(path)
        self.session = ort_session(self.path, threads)
        self.metadata = read_metadata(self.path)
        tta = self.metadata.get("preprocessing", {}).get("hflip_tta", False)
        self.hflip_tta = tta if hflip_tta is None else hflip_tta

    def logits(self, images_uint8: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) uint8 → (B, classes) float32, mirror-averaged when the run was."""
        x = normalize_uint8(images_uint8)
        (logits,) = self.session.run(["logits"], {"images": x})
        if self.hflip_tta:
            (mirrored,) = self.session.run(
                ["logits"], {"images": np.ascontiguousarray(x[..., ::-1])}
            )
            logits = (logits + mirrored) / 2
        return logits


class OrtDiT:
    """An exported DiT network with TinyDiT's calling convention and attributes: (x, t, y)
    → prediction, plus null_class, prediction and noise_scale from the file's metadata.

    Tensors in, tensors out (CPU float32), so `flow.sample_from_noise` samples it unchanged.
    """

    def __init__(self, path: Path, *, threads: int | None = None):
        self.path = Path(path)
        self.session = ort_session(self.path, threads)
        self.metadata = read_metadata(self.path)
        self.null_class = int(self.metadata["null_class"])
        self.prediction = self.metadata["prediction"]
        self.noise_scale = float(self.metadata["noise_scale"])
        self.image_shape = tuple(self.metadata["image_shape"])

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        feed = {
            "x": x.detach().cpu().float().numpy(),
            "t": t.detach().cpu().float().numpy(),
            "y": y.detach().cpu().long().numpy(),
        }
        (prediction,) = self.session.run(["prediction"], feed)
        return torch.from_numpy(prediction)
