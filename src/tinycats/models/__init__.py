"""Models: the breed classifier, the TinyDiT generator, flow matching, EMA, export, grids.

One uniform factory for the training engine: `create_model(task, config, num_classes)`
builds a fresh model and returns the `model_args` that rebuild it, and
`model_from_args(task, model_args)` rebuilds it from a checkpoint, so a resumed or
evaluated run never depends on the current defaults. This package knows nothing of
storage or data.
"""

from __future__ import annotations

import logging
from dataclasses import MISSING, asdict, fields
from typing import Any

from torch import nn

from tinycats.config import TrainConfig
from tinycats.errors import CheckpointError, ConfigError

TASKS = ("classifier", "dit")

log = logging.getLogger(__name__)


def create_model(task: str, config: TrainConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """A fresh model for `task` and its JSON-serialisable `model_args`.

    For the classifier, pretrained weights (config.classifier.pretrained) are applied
    here, once; they are not part of model_args since a checkpoint holds the weights.
    """
    if task == "classifier":
        from tinycats.models.classifier import create_classifier

        args = {"arch": config.classifier.arch, "num_classes": num_classes}
        return create_classifier(pretrained=config.classifier.pretrained, **args), args
    if task == "dit":
        from tinycats.models.dit import TinyDiT, dit_args_from_config

        dit_args = dit_args_from_config(config.dit, config.data.image_size, num_classes)
        return TinyDiT(dit_args), asdict(dit_args)
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def model_from_args(task: str, model_args: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a checkpoint's `model_args` (randomly initialised; load weights next)."""
    if task == "classifier":
        from tinycats.models.classifier import create_classifier

        _check_keys(task, model_args, {"arch", "num_classes"}, set())
        return create_classifier(model_args["arch"], int(model_args["num_classes"]))
    if task == "dit":
        from tinycats.models.dit import DiTArgs, TinyDiT

        required = {f.name for f in fields(DiTArgs) if f.default is MISSING}
        optional = {f.name for f in fields(DiTArgs)} - required
        _check_keys(task, model_args, required, optional)
        if model_args.get("prediction", "v") not in ("x", "v"):
            raise CheckpointError(
                f"dit checkpoint has prediction={model_args['prediction']!r} (expected 'x' "
                "or 'v'); the checkpoint is damaged or from another program"
            )
        return TinyDiT(DiTArgs(**model_args))
    raise CheckpointError(f"checkpoint is for unknown task {task!r}; expected one of {TASKS}")


def config_of_resumed_run(config: TrainConfig, model_args: dict[str, Any]) -> TrainConfig:
    """The config a run resumes with: what its checkpoint's model was built for wins.

    A DiT keeps the prediction type and noise scale it started with (checkpoints written
    before these existed are "v" and 1.0), whatever today's defaults or a --set say: a
    model trained to output velocities cannot continue as an image predictor.
    """
    if config.task != "dit":
        return config
    saved = {
        "prediction": model_args.get("prediction", "v"),
        "noise_scale": model_args.get("noise_scale", 1.0),
    }
    changed = {k: v for k, v in saved.items() if getattr(config.dit, k) != v}
    if not changed:
        return config
    log.warning(
        "the run resumes with %s as it started; the config's %s applies to new runs only",
        ", ".join(f"dit.{k}={v!r}" for k, v in changed.items()),
        ", ".join(f"dit.{k}={getattr(config.dit, k)!r}" for k in changed),
    )
    return config.model_copy(update={"dit": config.dit.model_copy(update=changed)})


def _check_keys(task: str, args: dict[str, Any], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - args.keys())
    unknown = sorted(args.keys() - required - optional)
    if missing or unknown:
        raise CheckpointError(
            f"{task} checkpoint model_args do not match this version of tinycats "
            f"(missing {missing}, unknown {unknown}); use the tinycats version that wrote it"
        )
