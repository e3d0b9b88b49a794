"""The classifier task: label-smoothed cross-entropy with optional MixUp/CutMix, accuracy."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tinycats.config import TrainConfig
from tinycats.models.classifier import classify, normalize_images


class ClassifierTask:
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
