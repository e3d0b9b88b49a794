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
from tinycats.errors import CheckpointError
from tinycats.models import model_from_args
from tinycats.storage import CheckpointInfo, Store, load_checkpoint, resolve_checkpoint
from tinycats.train.device import select_device
from tinycats.train.exported import is_export_dir, load_export_weights, read_export_config


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
    """Resolve `ref` (run id, run dir, step dir, or a folder written by `tinycats export
    hf`), verify, and rebuild the model in eval mode."""
    if is_export_dir(Path(ref)):
        return load_exported_model(Path(ref), device=device)
    path = resolve_checkpoint(store, ref, which=which)
    loaded = load_checkpoint(Path(path))
    config = validate_config(loaded.meta["config"])
    source = "ema" if use_ema and "ema" in loaded.weights else "model"
    return _ready(
        config,
        loaded.meta["model_args"],
        loaded.weights[source],
        classes=list(loaded.meta["classes"]),
        info=loaded.info,
        weights=source,
        device=device,
    )


def load_exported_model(folder: Path, *, device: torch.device | None = None) -> TrainedModel:
    """An exported folder (see tinycats.train.exported) rebuilt from its own config."""
    doc = read_export_config(folder)
    config = validate_config(doc["training_config"])
    source = doc["source"]
    info = CheckpointInfo(
        path=Path(folder),
        run_id=str(source.get("run_id", Path(folder).name)),
        task=config.task,
        step=int(source.get("step", 0)),
        time=float(source.get("time", 0.0)),
    )
    try:
        return _ready(
            config,
            doc["model_args"],
            load_export_weights(folder),
            classes=list(doc["classes"]),
            info=info,
            weights=str(source.get("weights", "model")),
            device=device,
        )
    except RuntimeError as err:  # load_state_dict: missing, unexpected or misshapen tensors
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"the weights in {folder} do not fit its config.json ({first}); re-export the model"
        ) from None


def _ready(
    config: TrainConfig,
    model_args: dict,
    state_dict: dict[str, torch.Tensor],
    *,
    classes: list[str],
    info: CheckpointInfo,
    weights: str,
    device: torch.device | None,
) -> TrainedModel:
    model = model_from_args(config.task, model_args)
    model.load_state_dict(state_dict)
    device = device or select_device()
    model.to(device).eval()
    return TrainedModel(model, config, classes, info, weights, device)


def untrained_model(config: TrainConfig, classes: list[str]) -> TrainedModel:
    """A freshly initialised model of `config`, dressed as a trained one, on the CPU.

    For benchmarks and smoke runs, where what a model costs matters and not what it
    answers. The zero-initialised layers (the DiT's adaLN-zero gates and output) get
    small random values, as after training, so every layer does real work.
    """
    from tinycats.models import create_model

    torch.manual_seed(config.seed)
    model, _ = create_model(config, len(classes))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0.0, 0.02)
    info = CheckpointInfo(path=Path("."), run_id="untrained", task=config.task, step=0, time=0.0)
    return TrainedModel(model.eval(), config, list(classes), info, "model", torch.device("cpu"))
