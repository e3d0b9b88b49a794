"""A trained breed classifier as the judge of generated cats: its verdicts and features.

The judge looks at every image the same way, whatever made it: a uint8 square at the
generator's resolution is cut to the judge's central `eval_crop`, resized to its
`eval_image_size` (bilinear, antialiased, rounded back to uint8 as a stored photo is)
and normalised as in training. Real photos are first brought to the generator's
resolution by the caller, so a 64 px sample and a photo differ only in content, never
in how many pixels the judge saw.

`JudgeFeatures` is the judge's penultimate layer (the pooled 512 values of a
ResNet-18) as an `nn.Module` with `num_features`, the shape torchmetrics'
FrechetInceptionDistance takes as its `feature` extractor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinycats.data import central_box
from tinycats.errors import TinycatsError
from tinycats.models.classifier import normalize_images
from tinycats.train.inference import TrainedModel


class JudgeFeatures(nn.Module):
    """uint8 images (B, 3, S, S) at any S → the judge's penultimate features (B, F), float32.

    The body is the classifier without its last layer (`fc`), run in eval mode and in
    fp32; `head` is that last layer, so `head(features)` are the judge's logits from the
    same forward pass.
    """

    def __init__(self, judge: TrainedModel):
        super().__init__()
        children = dict(judge.model.named_children())
        if "fc" not in children:
            raise TypeError(f"the judge must be a torchvision ResNet, got {type(judge.model)}")
        self.head: nn.Linear = children.pop("fc")
        self.body = nn.Sequential(*children.values(), nn.Flatten(1)).eval()
        self.image_size = judge.config.eval_image_size
        self.crop = judge.config.eval_crop
        self.hflip_tta = judge.config.classifier.tta_hflip
        self.num_features = self.head.in_features
        self.device = judge.device

    def view(self, images: Tensor) -> Tensor:
        """uint8 (B, 3, S, S) → uint8 (B, 3, size, size): the central crop, resized."""
        top, left, h, w = central_box(images.shape[-2], images.shape[-1], self.crop)
        crop = images[..., top : top + h, left : left + w].float()
        resized = F.interpolate(
            crop, size=(self.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
        )
        return resized.round().clamp(0, 255).to(torch.uint8)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return self.body(normalize_images(self.view(images.to(self.device)))).float()

    @torch.no_grad()
    def judge(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(features (B, F), logits (B, classes)) of uint8 images, on the CPU. The logits
        average the image and its mirror when the judge's own evaluation does."""
        x = normalize_images(self.view(images.to(self.device)))
        features = self.body(x).float()
        logits = self.head(features)
        if self.hflip_tta:
            logits = (logits + self.head(self.body(x.flip(3)).float())) / 2
        return features.cpu(), logits.cpu()


def class_map(judge: TrainedModel, dit: TrainedModel) -> Tensor:
    """For each of the generator's classes, the judge's index of the same breed.

    The judge must know exactly the generator's breeds (their order may differ);
    anything else is refused, since a verdict over other classes would mean nothing.
    """
    if sorted(judge.classes) != sorted(dit.classes):
        missing = sorted(set(dit.classes) - set(judge.classes))
        extra = sorted(set(judge.classes) - set(dit.classes))
        raise TinycatsError(
            f"judge {judge.run_id} knows other classes than {dit.run_id} (lacks "
            f"{', '.join(missing) or 'none'}; extra {', '.join(extra) or 'none'}); pass a "
            "classifier trained on the generator's dataset"
        )
    return torch.tensor([judge.classes.index(c) for c in dit.classes])
