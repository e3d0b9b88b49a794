"""Load a trained model from a run or checkpoint, for evaluation, prediction and sampling.

The model is rebuilt from the checkpoint's own `model_args` and config (never from
today's defaults), and the EMA weights are used when the run kept them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tinycats.config import TrainConfig, validate_config
from tinycats.models import model_from_args
from tinycats.storage import CheckpointInfo, Store, load_checkpoint, resolve_checkpoint
from tinycats.train.device import select_device


@dataclass
class TrainedModel:
    """A model ready for inference, with what is needed to interpret its outputs."""

    model: nn.Module
    config: TrainConfig
    classes: list[str]
    info: CheckpointInfo
    weights: str  # "ema" or "model"
    device: torch.device

    @property
    def run_id(self) -> str:
        return self.info.run_id


def load_trained_model(
    store: Store,
    ref: str,
    *,
    which: str = "best",
    use_ema: bool = True,
    device: torch.device | None = None,
) -> TrainedModel:
    """Resolve `ref` (run id, run dir or step dir), verify, and rebuild the model in eval mode."""
    path = resolve_checkpoint(store, ref, which=which)
    loaded = load_checkpoint(Path(path))
    config = validate_config(loaded.meta["config"])
    model = model_from_args(config.task, loaded.meta["model_args"])
    source = "ema" if use_ema and "ema" in loaded.weights else "model"
    model.load_state_dict(loaded.weights[source])
    device = device or select_device()
    model.to(device).eval()
    return TrainedModel(
        model=model,
        config=config,
        classes=list(loaded.meta["classes"]),
        info=loaded.info,
        weights=source,
        device=device,
    )
