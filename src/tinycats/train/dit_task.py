"""The DiT task: the flow-matching loss, validation loss, and fixed-seed sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tinycats.config import TrainConfig
from tinycats.models.flow import flow_matching_loss, sample, to_uint8
from tinycats.models.grid import make_grid_image
from tinycats.train.task import EVAL_SEED

if TYPE_CHECKING:
    from tinycats.train.inference import TrainedModel


class DiTTask:
    """Class-conditional generation with rectified flow; previews are fixed-seed sample grids."""

    name = "dit"

    def __init__(self, config: TrainConfig):
        self.dit = config.dit

    def loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x1 = images.float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        loss = flow_matching_loss(
            model,
            x1,
            labels,
            class_dropout=self.dit.class_dropout,
            null_class=model.null_class,
            time_sampling=self.dit.time_sampling,
            logit_mean=self.dit.logit_normal_mean,
            logit_std=self.dit.logit_normal_std,
        )
        return loss, {}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device
    ) -> dict[str, float]:
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=device).manual_seed(EVAL_SEED)
        total, count = 0.0, 0
        for images, labels in loader:
            x1 = images.to(device).float() / 127.5 - 1.0
            loss = flow_matching_loss(
                model,
                x1,
                labels.to(device),
                class_dropout=0.0,
                null_class=model.null_class,
                time_sampling=self.dit.time_sampling,
                logit_mean=self.dit.logit_normal_mean,
                logit_std=self.dit.logit_normal_std,
                generator=generator,
            )
            total += loss.item() * len(labels)
            count += len(labels)
        model.train(was_training)
        return {"val_loss": total / count} if count else {}

    def preview(
        self, model: nn.Module, classes: list[str], device: torch.device, path: Path
    ) -> Path | None:
        if self.dit.preview_per_class == 0:
            return None
        grid = sample_grid(
            model,
            classes,
            list(range(len(classes))),
            per_class=self.dit.preview_per_class,
            steps=self.dit.sample_steps,
            cfg_scale=self.dit.cfg_scale,
            sampler=self.dit.sampler,
            seed=EVAL_SEED,
            device=device,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        return path


@torch.no_grad()
def sample_grid(
    model: nn.Module,
    classes: list[str],
    class_indices: list[int],
    *,
    per_class: int,
    steps: int,
    cfg_scale: float,
    sampler: str,
    seed: int,
    device: torch.device,
) -> Image.Image:
    """A labelled grid: one row per requested class, `per_class` samples each, fixed seed."""
    was_training = model.training
    model.eval()
    labels = torch.tensor(class_indices, device=device).repeat_interleave(per_class)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = sample(
        model,
        labels,
        steps=steps,
        cfg_scale=cfg_scale,
        sampler=sampler,
        generator=generator,
        image_shape=(model.args.in_channels, model.args.image_size, model.args.image_size),
    )
    model.train(was_training)
    rows = [classes[i] for i in class_indices]
    return make_grid_image(to_uint8(images).cpu(), rows, per_class)


def every_class_grid(trained: TrainedModel, per_class: int, seed: int = 0) -> Image.Image:
    """Every class of a trained DiT, `per_class` each, with the run's own sampling settings."""
    dit = trained.config.dit
    return sample_grid(
        trained.model,
        trained.classes,
        list(range(len(trained.classes))),
        per_class=per_class,
        steps=dit.sample_steps,
        cfg_scale=dit.cfg_scale,
        sampler=dit.sampler,
        seed=seed,
        device=trained.device,
    )
