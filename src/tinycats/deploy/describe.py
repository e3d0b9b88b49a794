"""What a consumer of an exported model must know, in one place.

The same description goes into the Hugging Face config.json, the ONNX metadata and the
web demo's manifest, so Python, onnxruntime and the browser prepare an image (or sample
the generator) the same way: size, crop, normalisation, mirror averaging; prediction
type, null class, sampling defaults.
"""

from __future__ import annotations

from typing import Any

from tinycats.models.classifier import IMAGENET_MEAN, IMAGENET_STD
from tinycats.train.inference import TrainedModel


def preprocessing(trained: TrainedModel) -> dict[str, Any]:
    """How `tinycats predict` turns a photo into the classifier's input."""
    config = trained.config
    return {
        "image_size": config.eval_image_size,
        "stored_size": config.data.stored_size,
        "crop": config.eval_crop,
        "resize": "central square to stored_size (bicubic), its central `crop` fraction, "
        "then image_size (bilinear, antialiased)",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "hflip_tta": config.classifier.tta_hflip,
        "layout": "NCHW float32, RGB scaled to [0, 1] then normalised",
    }


def generation(trained: TrainedModel) -> dict[str, Any]:
    """How the DiT network is sampled: what it predicts, the null class, the defaults."""
    dit = trained.config.dit
    return {
        "prediction": trained.model.prediction,
        "noise_scale": trained.model.noise_scale,
        "null_class": trained.model.null_class,
        "pixel_range": [-1.0, 1.0],
        "sample_steps": dit.sample_steps,
        "sampler": dit.sampler,
        "cfg_scale": dit.cfg_scale,
    }


def describe(trained: TrainedModel) -> dict[str, Any]:
    """The task, classes, origin and the task's preprocessing or generation settings."""
    doc: dict[str, Any] = {
        "task": trained.config.task,
        "classes": trained.classes,
        "run_id": trained.run_id,
        "step": trained.info.step,
        "weights": trained.weights,
    }
    if trained.config.task == "classifier":
        doc["preprocessing"] = preprocessing(trained)
    else:
        doc["generation"] = generation(trained)
    return doc
