"""Stronger train-time augmentations for small datasets: TrivialAugment and random erasing.

Both draw every random choice from the caller's torch.Generator (one per sample, seeded
by (seed, epoch, index)), unlike torchvision's versions which use the global RNG: a
sample's pixels must not depend on worker order, or resumed runs would not be exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

NUM_BINS = 31
"""Magnitude levels, as in TrivialAugment (Müller & Hutter, 2021)."""


def _affine(image: torch.Tensor, **kwargs: float | list[float]) -> torch.Tensor:
    params = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0]}
    return TF.affine(image, **{**params, **kwargs}, interpolation=InterpolationMode.BILINEAR)


def _translate_pixels(image: torch.Tensor, level: float) -> float:
    return level * image.shape[-1] / 3  # up to a third of the side (32 px of 96, as TA-wide)


# name → (operation given a signed magnitude in [-1, 1]); one is picked per image.
_OPERATIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "identity": lambda im, m: im,
    "shear_x": lambda im, m: _affine(im, shear=[math.degrees(math.atan(0.99 * m)), 0.0]),
    "shear_y": lambda im, m: _affine(im, shear=[0.0, math.degrees(math.atan(0.99 * m))]),
    "translate_x": lambda im, m: _affine(im, translate=[_translate_pixels(im, m), 0.0]),
    "translate_y": lambda im, m: _affine(im, translate=[0.0, _translate_pixels(im, m)]),
    "rotate": lambda im, m: _affine(im, angle=135.0 * m),
    "brightness": lambda im, m: TF.adjust_brightness(im, 1.0 + 0.99 * m),
    "color": lambda im, m: TF.adjust_saturation(im, 1.0 + 0.99 * m),
    "contrast": lambda im, m: TF.adjust_contrast(im, 1.0 + 0.99 * m),
    "sharpness": lambda im, m: TF.adjust_sharpness(im, 1.0 + 0.99 * m),
    "posterize": lambda im, m: TF.posterize(im, 8 - round(6 * abs(m))),
    "solarize": lambda im, m: TF.solarize(im, 255.0 * (1.0 - abs(m))),
    "autocontrast": lambda im, m: TF.autocontrast(im),
    "equalize": lambda im, m: TF.equalize(im),
}
OPERATIONS = tuple(_OPERATIONS)


def trivial_augment(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """TrivialAugment-wide: one operation, one magnitude level, both uniform at random.

    uint8 (3, H, W) in and out. Tuning-free, and on small datasets trained from scratch
    it regularises much like hand-tuned RandAugment.
    """
    op, level, sign = torch.rand(3, generator=gen).tolist()
    name = OPERATIONS[int(op * len(OPERATIONS))]
    magnitude = int(level * NUM_BINS) / (NUM_BINS - 1) * (1 if sign < 0.5 else -1)
    return _OPERATIONS[name](image, magnitude).contiguous()


def random_erase(image: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """With `probability`, fill a random rectangle (2-33% of the area, aspect 0.3-3.3)
    with uniform noise (Zhong et al., 2020; timm's 'pixel' mode). Modifies `image`."""
    u = torch.rand(5, generator=gen).tolist()
    if u[0] >= probability:
        return image
    _, height, width = image.shape
    area = height * width * (0.02 + (1 / 3 - 0.02) * u[1])
    log_ratio = math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[2]
    h = min(height, round(math.sqrt(area * math.exp(log_ratio))))
    w = min(width, round(math.sqrt(area / math.exp(log_ratio))))
    top, left = int(u[3] * (height - h + 1)), int(u[4] * (width - w + 1))
    noise = torch.randint(0, 256, (image.shape[0], h, w), dtype=torch.uint8, generator=gen)
    image[:, top : top + h, left : left + w] = noise
    return image
