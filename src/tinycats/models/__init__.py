"""Models: the breed classifier, the TinyDiT generator, flow matching, EMA, export, grids.

One uniform factory for the training engine, dispatched through the task registry
(`tinycats.config.TASKS`): `create_model(config, num_classes)` builds a fresh model
and returns the `model_args` that rebuild it, and `model_from_args(task, model_args)`
rebuilds it from a checkpoint, so a resumed or evaluated run never depends on the
current defaults. Each task's model module provides the two functions, and may provide
`config_of_resumed_run` where its model fixes config values a resume must keep. This
package knows nothing of storage or data.
"""

from __future__ import annotations

import importlib
from collections.abc import Set
from types import ModuleType
from typing import Any

from torch import nn

from tinycats.config import TASKS, TrainConfig
from tinycats.errors import CheckpointError


def create_model(config: TrainConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model for `config.task` and its JSON-serialisable `model_args`."""
    return _model_module(config.task).create_model(config, num_classes)


def model_from_args(task: str, model_args: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a checkpoint's `model_args` (randomly initialised; load weights next)."""
    if task not in TASKS:
        raise CheckpointError(
            f"checkpoint is for unknown task {task!r}; expected one of {', '.join(TASKS)}"
        )
    return _model_module(task).model_from_args(model_args)


def config_of_resumed_run(config: TrainConfig, model_args: dict[str, Any]) -> TrainConfig:
    """The config a run resumes with: what its checkpoint's model was built for wins."""
    adjust = getattr(_model_module(config.task), "config_of_resumed_run", None)
    return config if adjust is None else adjust(config, model_args)


def _model_module(task: str) -> ModuleType:
    return importlib.import_module(TASKS[task].model)


def check_model_args(
    task: str, args: dict[str, Any], required: Set[str], optional: Set[str] = frozenset()
) -> None:
    """Refuse saved `model_args` that this version's model cannot be rebuilt from."""
    missing = sorted(required - args.keys())
    unknown = sorted(args.keys() - required - optional)
    if missing or unknown:
        raise CheckpointError(
            f"{task} checkpoint model_args do not match this version of tinycats "
            f"(missing {missing}, unknown {unknown}); use the tinycats version that wrote it"
        )
