"""What differs between tasks in training: loss, evaluation, previews.

The engine owns everything else (devices, AMP, accumulation, EMA, checkpoints,
resume); the model comes from the uniform factory (`tinycats.models`). Each task's
class lives in its own module, named by the task registry (`tinycats.config.TASKS`).
A task never touches the global random generators outside its training loss:
evaluation and previews use their own seeded generators, so an extra evaluation
(e.g. at a preemption checkpoint) cannot change the training trajectory.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from tinycats.config import TASKS, TrainConfig

EVAL_SEED = 1234
"""Seed of the private generator used by evaluations and previews."""


class Task(Protocol):
    """The training side of one task; built from the resolved config."""

    name: str

    def loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss for a batch of uint8 images, and extra metrics (as tensors, no sync)."""
        ...

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device
    ) -> dict[str, float]:
        """Validation metrics (deterministic)."""
        ...

    def preview(
        self, model: nn.Module, classes: list[str], device: torch.device, path: Path
    ) -> Path | None:
        """Write something a person can look at after a checkpoint (or nothing)."""
        ...


def make_task(config: TrainConfig) -> Task:
    """The task object for `config.task`, from the registry's "module:Class"."""
    module, _, name = TASKS[config.task].trainer.partition(":")
    return getattr(importlib.import_module(module), name)(config)
