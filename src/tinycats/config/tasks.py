"""The task registry: every list of tasks in tinycats is read from here.

It imports nothing of the layers that use it: `models` and `train` resolve the dotted
names lazily, so adding a task means one entry here and its own two modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinycats.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """One trainable task: everything that differs between tasks, in one place.

    The layers resolve the dotted names lazily, so this registry imports nothing:
    `models` builds and rebuilds the model from `model` (a module with
    `create_model(config, num_classes) -> (model, model_args)` and
    `model_from_args(model_args)`), and `train` runs the loss, evaluation and
    previews of `trainer` ("module:Class"). Adding a task means one entry here and
    those two modules.
    """

    name: str
    summary: str
    defaults: dict[str, Any]
    """Config values that differ from the field defaults below, beneath file and flags."""
    model: str
    trainer: str


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="classifier",
            summary="breed classifier (a torchvision ResNet)",
            defaults={},
            model="tinycats.models.classifier",
            trainer="tinycats.train.classifier_task:ClassifierTask",
        ),
        TaskSpec(
            name="dit",
            summary="class-conditional TinyDiT generator (flow matching)",
            defaults={
                "data": {
                    "image_size": 32,
                    "stored_scale": 1.0,
                    "augment": {"crop_scale_min": 0.8},
                },
                "optim": {"lr": 3e-4, "weight_decay": 0.0, "ema_decay": 0.995, "warmup_steps": 10},
                "checkpoint": {"best_metric": "val_loss", "best_mode": "min"},
                # The original plan's DiT policy: 2 retries, 30 s first delay.
                "retries": {"max_retries": 2, "initial_delay": 30.0},
                "modal": {"gpu": "A10G"},
            },
            model="tinycats.models.dit",
            trainer="tinycats.train.dit_task:DiTTask",
        ),
    )
}
"""The task registry: every list of tasks in tinycats is read from here."""


def task_spec(task: str) -> TaskSpec:
    """The registry entry of `task`, or a ConfigError naming the known ones."""
    try:
        return TASKS[task]
    except KeyError:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}") from None
