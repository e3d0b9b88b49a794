"""What differs between the classifier and the DiT: model, loss, evaluation, previews.

The engine owns everything else (devices, AMP, accumulation, EMA, checkpoints,
resume). A task never touches the global random generators outside its training
loss: evaluation and previews use their own seeded generators, so an extra
evaluation (e.g. at a preemption checkpoint) cannot change the training trajectory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from tinycats.config import TrainConfig
from tinycats.models import create_model
from tinycats.models.classifier import classify, normalize_images
from tinycats.models.flow import flow_matching_loss, sample, to_uint8
from tinycats.models.grid import make_grid_image

EVAL_SEED = 1234
"""Seed of the private generator used by evaluations and previews."""


class Task(Protocol):
    name: str

    def build_model(
        self, config: TrainConfig, num_classes: int
    ) -> tuple[nn.Module, dict[str, Any]]:
        """A fresh model and the JSON-able args that rebuild it."""
        ...

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


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: DataLoader, device: torch.device, *, hflip_tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and labels of a loader, on the CPU (model in eval mode)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, y in loader:
        logits.append(classify(model, images.to(device), hflip_tta=hflip_tta).float().cpu())
        labels.append(y)
    model.train(was_training)
    if not labels:  # an empty split (e.g. data.val_fraction = 0)
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def mix_batch(
    x: torch.Tensor, mixup_alpha: float, cutmix_alpha: float
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """MixUp or CutMix a batch with a shuffled copy of itself (timm's recipe, per batch).

    Returns the mixed images, the partner index of each image (None when off) and the
    weight of the original labels. Draws from the global torch RNG, which the engine
    saves, so resumed runs mix identically.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, None, 1.0
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()).item() < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    partner = torch.randperm(x.shape[0]).to(x.device)
    if not use_cutmix:
        return lam * x + (1.0 - lam) * x[partner], partner, lam
    height, width = x.shape[-2:]
    cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
    cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[partner][:, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)  # the area actually pasted
    return mixed, partner, lam


class _FactoryModel:
    """Tasks build their model through the uniform factory, by task name."""

    name: str

    def build_model(
        self, config: TrainConfig, num_classes: int
    ) -> tuple[nn.Module, dict[str, Any]]:
        return create_model(self.name, config, num_classes)


class ClassifierTask(_FactoryModel):
    """Breed classification with label-smoothed cross-entropy."""

    name = "classifier"

    def __init__(self, config: TrainConfig):
        self.label_smoothing = config.classifier.label_smoothing
        self.mixup_alpha = config.classifier.mixup_alpha
        self.cutmix_alpha = config.classifier.cutmix_alpha
        self.hflip_tta = config.classifier.tta_hflip

    def loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, partner, lam = mix_batch(normalize_images(images), self.mixup_alpha, self.cutmix_alpha)
        logits = model(x)  # (B, num_classes)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        if partner is not None:
            mixed = F.cross_entropy(logits, labels[partner], label_smoothing=self.label_smoothing)
            loss = lam * loss + (1.0 - lam) * mixed
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"acc": accuracy.detach()}

    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device
    ) -> dict[str, float]:
        logits, labels = predict_logits(model, loader, device, hflip_tta=self.hflip_tta)
        if len(labels) == 0:
            return {}
        return {
            "val_loss": F.cross_entropy(logits, labels).item(),
            "val_acc": (logits.argmax(dim=1) == labels).float().mean().item(),
        }

    def preview(
        self, model: nn.Module, classes: list[str], device: torch.device, path: Path
    ) -> Path | None:
        return None


class DiTTask(_FactoryModel):
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


def make_task(config: TrainConfig) -> Task:
    """The task object for `config.task`."""
    return {"classifier": ClassifierTask, "dit": DiTTask}[config.task](config)
