"""A whole training run: the I/O that prepares a Trainer, then its loop.

`build_trainer` prepares the data, loads the run's last committed checkpoint and
builds the model (reading pretrained weights), so that `Trainer` itself (engine.py)
does no I/O; `run_training` is what the CLI runs locally and the Modal class runs in
a container.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tinycats.config import TrainConfig
from tinycats.models import config_of_resumed_run, create_model, model_from_args
from tinycats.storage import CheckpointManager, LoadedCheckpoint, Store
from tinycats.train.batches import load_training_data
from tinycats.train.distributed import Distributed
from tinycats.train.engine import Trainer, TrainResult
from tinycats.train.preemption import PreemptionGuard
from tinycats.train.state import seed_everything
from tinycats.train.tracking import require_trackers


@dataclass
class RunModel:
    """The model a run trains and the `model_args` its checkpoints record to rebuild it."""

    module: nn.Module
    args: dict[str, Any]


def build_model(
    config: TrainConfig, num_classes: int, resume: LoadedCheckpoint | None
) -> tuple[RunModel, TrainConfig]:
    """A fresh model (pretrained weights are read here), or the one a checkpoint describes,
    with the config it runs under (a resumed run keeps the architecture it started with)."""
    if resume is None:
        seed_everything(config.seed)  # before the model: its init is part of the run
        return RunModel(*create_model(config, num_classes)), config
    args = resume.meta["model_args"]
    return RunModel(model_from_args(config.task, args), args), config_of_resumed_run(config, args)


def build_trainer(
    config: TrainConfig,
    store: Store,
    run_id: str,
    *,
    resume: LoadedCheckpoint | None = None,
    guard: PreemptionGuard | None = None,
    progress: bool | None = None,
    device: torch.device | None = None,
    dist: Distributed | None = None,
) -> Trainer:
    """Prepare the data, the checkpoint to continue from and the model: a ready Trainer.

    The checkpoint is `resume` when the caller loaded it (train.resume does, under the
    run's lock), else the run's newest that verifies. Under data parallelism rank 0
    prepares the data before the others open it, and picks the checkpoint every rank then
    loads, so all restore the same one.
    """
    require_trackers(config)  # before the data: a missing library is a one-line fix
    dist = dist or Distributed()
    data = dist.main_first(lambda: load_training_data(config, store.root))
    if resume is None:
        manager = CheckpointManager.from_config(store, config.task, run_id, config)
        resume = dist.same_checkpoint(manager)
    model, config = build_model(config, len(data.classes), resume)
    return Trainer(
        config,
        store,
        run_id,
        data,
        model,
        resume=resume,
        guard=guard,
        progress=progress,
        device=device,
        dist=dist,
    )


def run_training(
    config: TrainConfig,
    store: Store,
    run_id: str,
    *,
    resume: LoadedCheckpoint | None = None,
    guard: PreemptionGuard | None = None,
    progress: bool | None = None,
    dist: Distributed | None = None,
) -> TrainResult:
    """Train `run_id` to `config.optim.max_steps`, continuing from `resume` or else from its
    newest checkpoint that verifies.

    With `guard` requested (SIGTERM, Ctrl-C, cloud cancellation) the loop writes a
    checkpoint at the next step boundary, commits it and returns status "preempted".
    `dist` is this process's place in a data-parallel job (distributed.py); None: alone.
    """
    return build_trainer(
        config, store, run_id, resume=resume, guard=guard, progress=progress, dist=dist
    ).fit()
