"""A torch Dataset over packed shards, with deterministic uint8 augmentations.

Reads are memory-mapped (a sample touches only its own pages). Train augmentation
draws from a torch.Generator seeded by (seed, epoch, index), so a sample's pixels do
not depend on worker count, worker order or what was drawn before: the property that
exact resume of a training run needs.
"""

from __future__ import annotations

import gc
import math
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tinycats.config import AugmentConfig
from tinycats.data.augment import random_erase, trivial_augment
from tinycats.data.shards import SPLITS, load_manifest, open_shard
from tinycats.errors import DataError

_MAPPED: weakref.WeakSet[ShardDataset] = weakref.WeakSet()
"""Datasets of this process whose shards are memory-mapped right now."""

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
_CROP_TRIES = 10
_MASK64 = (1 << 64) - 1
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma weights, as torchvision uses


def _splitmix64(x: int) -> int:
    """SplitMix64's finaliser: every input bit flips about half of the output bits."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit seed from (seed, epoch, index): neighbouring indices or epochs
    get unrelated streams, not shifted copies of one another. Plain integer hashing, as
    it runs once per sample (numpy's SeedSequence costs ~30 µs, a tenth of a sample)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ (epoch & _MASK64)) ^ (index & _MASK64))


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
    return central_box(height, width, 1.0)  # fallback, as torchvision's for ratio 1


def central_box(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the central square whose side is `fraction` of the shorter side.

    Evaluating on the central part matches the framing of random-resized training crops,
    which cover crop_scale_min..100% of the photo and so show the cat larger than a
    whole-photo view does (timm's crop_pct; torchvision's 256 → 224 evaluation crop is
    fraction 0.875)."""
    side = max(1, round(min(height, width) * fraction))
    return (height - side) // 2, (width - side) // 2, side, side


def color_jitter(image: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s].

    The three adjustments are linear in RGB, so they fuse into one 3×3 colour matrix and
    an offset, applied as a single matrix product over a (3, H*W) float copy and clamped
    once; torchvision's three separate calls (each converting and clamping) cost several
    times more on a 128 px image, which matters in a loader doing little else. uint8 (3, H, W) in (any memory layout),
    contiguous uint8 (3, H, W) out.
    """
    b, c, s = (1.0 + strength * (2 * u - 1) for u in torch.rand(3, generator=gen).tolist())
    channels, height, width = image.shape
    x = image.to(torch.float32, memory_format=torch.contiguous_format).view(channels, -1)
    mean_gray = b * sum(w * m for w, m in zip(_GRAY, x.mean(1).tolist(), strict=True))
    # out = c·b·(s·x + (1-s)·gray(x)) + (1-c)·mean_gray, gray(x) = _GRAY·x. Built from
    # Python floats: tiny tensor ops would cost more than the matrix product itself.
    matrix = [c * b * (s * (i == j) + (1 - s) * _GRAY[j]) for i in range(3) for j in range(3)]
    offset = torch.full((3, 1), (1 - c) * mean_gray + 0.5)  # +0.5: round when truncating
    out = torch.addmm(offset, torch.tensor(matrix).view(3, 3), x).clamp_(0, 255.4)  # (3, H*W)
    # numpy's float→uint8 cast is ~5× faster than torch's saturating one
    return torch.from_numpy(out.numpy().astype(np.uint8)).view(channels, height, width)


def resize_crop(
    hwc: np.ndarray, box: tuple[int, int, int, int], size: int, *, flip: bool = False
) -> torch.Tensor:
    """Crop (top, left, h, w) of a uint8 (H, W, 3) array, mirrored if `flip`, resized to
    (3, size, size).

    Only the crop is copied out of `hwc` (a memory-map view), mirrored in the same copy,
    and that copy is already channels-last, the layout of torch's vectorised uint8
    bilinear+antialias path (~3× faster than the same resize on a channels-first tensor).
    """
    top, left, h, w = box
    region = hwc[top : top + h, left : left + w]
    crop = torch.from_numpy(np.array(region[:, ::-1] if flip else region, order="C"))
    crop = crop.permute(2, 0, 1)[None]  # (1, 3, h, w), channels-last contiguous
    if (h, w) == (size, size):
        return crop[0]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0]


class ShardDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset: items are (uint8 image (3, size, size), label).

    train=True: random resized crop to image_size, horizontal flip, light colour jitter,
    deterministic given (seed, epoch, index); call `set_epoch` before each epoch's
    iterator is created (DataLoader workers copy the dataset then, so persistent workers
    would keep a stale epoch). train=False: the central `eval_crop` of the stored square
    (itself the photo's centre square) resized to image_size; 1.0 keeps the whole square.
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
        eval_crop: float = 1.0,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.prepared_dir = Path(prepared_dir)
        self.manifest = load_manifest(self.prepared_dir)
        self.split, self.image_size, self.train = split, image_size, train
        self.eval_crop = eval_crop
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

    def close(self) -> None:
        """Drop the memory maps (reopened on the next read). A Modal volume refuses to
        reload, and so to commit, while a file under it is mapped."""
        self._arrays = None
        _MAPPED.discard(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the memory maps into workers: np.memmap pickles its whole data.
        return {**self.__dict__, "_arrays": None}

    def stored(self, i: int) -> torch.Tensor:
        """The stored uint8 image i as (3, S, S), without any transform."""
        return torch.from_numpy(np.array(self._hwc(i))).permute(2, 0, 1)

    def _hwc(self, i: int) -> np.ndarray:
        """Image i as stored, (S, S, 3) uint8: a view into the memory map, nothing copied."""
        if self._arrays is None:
            self._arrays = [open_shard(f) for f in self._files]
            _MAPPED.add(self)
        shard, row = self._locations[i]
        return self._arrays[shard][row]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        hwc = self._hwc(i)
        if self.train:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
            image = self._augment(hwc, gen)
        else:
            box = central_box(hwc.shape[0], hwc.shape[1], self.eval_crop)
            image = resize_crop(hwc, box, self.image_size)
        return image.contiguous(), int(self.targets[i])

    def _augment(self, hwc: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        box = random_resized_crop_box(hwc.shape[0], hwc.shape[1], self.augment.crop_scale_min, gen)
        flip = self.augment.hflip and torch.rand(1, generator=gen).item() < 0.5
        image = resize_crop(hwc, box, self.image_size, flip=flip)  # (3, size, size)
        if self.augment.color_jitter > 0:
            image = color_jitter(image, self.augment.color_jitter, gen)
        if self.augment.trivial_augment:
            image = trivial_augment(image, gen)
        if self.augment.erase_prob > 0:
            image = random_erase(image, self.augment.erase_prob, gen)
        return image


def close_open_shards() -> int:
    """Unmap every shard this process has open; returns how many datasets held some.

    The `close_handles` callback of the data volume's Store: numpy closes a map (and
    the file descriptor mmap keeps) when the last view of it is freed, so after
    dropping the datasets' references a collection frees views held in reference
    cycles (a finished Trainer, a DataLoader iterator).
    """
    datasets = list(_MAPPED)
    for dataset in datasets:
        dataset.close()
    gc.collect()
    return len(datasets)
