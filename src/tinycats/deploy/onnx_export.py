"""ONNX files of trained models, each carrying its own description (see describe.py)."""

from __future__ import annotations

from pathlib import Path

from tinycats.deploy.describe import describe
from tinycats.models.export import export_dit_onnx, export_onnx
from tinycats.train.inference import TrainedModel


def export_classifier_onnx(trained: TrainedModel, path: Path) -> float:
    """The classifier at its eval size; returns max |ONNX - PyTorch| of the check."""
    size = trained.config.eval_image_size
    return export_onnx(trained.model, size, path, metadata=describe(trained))


def export_dit_network_onnx(trained: TrainedModel, path: Path) -> float:
    """The DiT network alone (guidance is the sampling loop's); returns the check's max diff."""
    return export_dit_onnx(trained.model, path, metadata=describe(trained))


def export_trained_onnx(trained: TrainedModel, path: Path) -> float:
    """Either model, by the run's task."""
    if trained.config.task == "classifier":
        return export_classifier_onnx(trained, path)
    return export_dit_network_onnx(trained, path)
