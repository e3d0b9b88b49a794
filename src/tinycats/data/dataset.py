"""A torch Dataset over packed shards, with deterministic uint8 augmentations.

Reads are memory-mapped (a sample touches only its own pages). Train augmentation
draws from a torch.Generator seeded by (seed, epoch, index), so a sample's pixels do
not depend on worker count, worker order or what was drawn before: the property that
exact resume of a training run needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from tinycats.config import AugmentConfig
from tinycats.data.shards import SPLITS, load_manifest, open_shard
from tinycats.errors import DataError

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
_CROP_TRIES = 10
_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed from (seed, epoch, index): neighbouring indices or epochs
    get unrelated streams (SeedSequence hashing), not shifted copies of one another."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def random_resized_crop_box(
    height: int, width: int, scale_min: float, gen: torch.Generator
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop draws it, but from `gen`
    (torchvision's get_params uses the global RNG, which is not deterministic per sample)."""
    area = height * width
    for _ in range(_CROP_TRIES):
        u = torch.rand(4, generator=gen).tolist()
        target = area * (scale_min + (1.0 - scale_min) * u[0])
        ratio = math.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * u[1])
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    side = min(height, width)  # fallback: the central square, as torchvision does for ratio 1
    return (height - side) // 2, (width - side) // 2, side, side


def color_jitter(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s], in one
    float pass over a uint8 (3, H, W) image (cheaper than three torchvision calls)."""
    b, c, s = (1.0 + strength * (2 * torch.rand(3, generator=gen) - 1)).tolist()
    x = image.float() * b  # brightness
    gray = (x * _GRAY).sum(0, keepdim=True)
    x = c * x + (1 - c) * gray.mean()  # contrast around the mean luminance
    gray = (x * _GRAY).sum(0, keepdim=True)
    x = s * x + (1 - s) * gray  # saturation towards the pixel's gray
    return x.clamp_(0, 255).round_().to(torch.uint8)


class ShardDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset: items are (uint8 image (3, size, size), label).

    train=True: random resized crop to image_size, horizontal flip, light colour jitter,
    deterministic given (seed, epoch, index); call `set_epoch` before each epoch's
    iterator is created (DataLoader workers copy the dataset then, so persistent workers
    would keep a stale epoch). train=False: the stored square (already the photo's
    center crop) resized to image_size, so evaluation sees the same framing as the
    scale≈1 train crops.
    `breeds` keeps only those classes, relabelled 0..k-1 in the order given.
    """

    def __init__(
        self,
        prepared_dir: Path,
        split: str,
        image_size: int,
        *,
        train: bool,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        breeds: list[str] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.prepared_dir = Path(prepared_dir)
        self.manifest = load_manifest(self.prepared_dir)
        self.split, self.image_size, self.train = split, image_size, train
        self.augment = augment if augment is not None else AugmentConfig()
        self.seed, self.epoch = seed, 0
        self.classes = list(breeds) if breeds else list(self.manifest.classes)
        unknown = [b for b in self.classes if b not in self.manifest.classes]
        if unknown:
            raise DataError(
                f"class {unknown[0]!r} is not in {self.prepared_dir} (it has "
                f"{', '.join(self.manifest.classes)}); fix data.breeds"
            )
        relabel = {self.manifest.classes.index(c): i for i, c in enumerate(self.classes)}
        shards = self.manifest.split_shards(split)
        self._files = [self.prepared_dir / s.file for s in shards]
        locations, targets, names = [], [], []
        for shard_index, shard in enumerate(shards):
            for row, (label, name) in enumerate(zip(shard.labels, shard.names, strict=True)):
                if label in relabel:
                    locations.append((shard_index, row))
                    targets.append(relabel[label])
                    names.append(name)
        self._locations = np.array(locations, dtype=np.int64).reshape(-1, 2)
        self.targets = torch.tensor(targets, dtype=torch.int64)
        self.names = names
        self._arrays: list[np.ndarray] | None = None  # opened lazily, once per process

    def __len__(self) -> int:
        return len(self.targets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the memory maps into workers: np.memmap pickles its whole data.
        return {**self.__dict__, "_arrays": None}

    def stored(self, i: int) -> torch.Tensor:
        """The stored uint8 image i as (3, S, S), without any transform."""
        if self._arrays is None:
            self._arrays = [open_shard(f) for f in self._files]
        shard, row = self._locations[i]
        return torch.from_numpy(np.array(self._arrays[shard][row])).permute(2, 0, 1)  # (3, S, S)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.stored(i)
        if self.train:
            image = self._augment(
                image, torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
            )
        elif image.shape[-1] != self.image_size:
            image = TF.resize(image, [self.image_size, self.image_size], antialias=True)
        return image, int(self.targets[i])

    def _augment(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(
            image.shape[1], image.shape[2], self.augment.crop_scale_min, gen
        )
        size = [self.image_size, self.image_size]
        image = TF.resized_crop(image, top, left, h, w, size, antialias=True)  # (3, size, size)
        if self.augment.hflip and torch.rand(1, generator=gen).item() < 0.5:
            image = image.flip(-1)
        if self.augment.color_jitter > 0:
            image = color_jitter(image, self.augment.color_jitter, gen)
        return image.contiguous()
