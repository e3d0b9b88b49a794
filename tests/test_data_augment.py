"""TrivialAugment and random erasing: per-sample determinism, and each doing what it says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinycats.config import AugmentConfig, DataConfig
from tinycats.data import ShardDataset, prepare_dataset
from tinycats.data.augment import OPERATIONS, random_erase, trivial_augment


def _image() -> torch.Tensor:
    return torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8, generator=torch.Generator())


def test_trivial_augment_is_deterministic_per_generator_and_mostly_changes_the_image() -> None:
    image = _image()
    a = [trivial_augment(image, torch.Generator().manual_seed(s)) for s in range(300)]
    b = [trivial_augment(image, torch.Generator().manual_seed(s)) for s in range(300)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.shape == image.shape and x.dtype == torch.uint8 for x in a)
    unchanged = sum(torch.equal(x, image) for x in a)
    assert unchanged < 300 * 3 / len(OPERATIONS)  # identity, and zero magnitudes, only


@pytest.mark.parametrize("seed", range(20))
def test_random_erase_fills_one_rectangle_within_bounds(seed: int) -> None:
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    erased = random_erase(image.clone(), 1.0, torch.Generator().manual_seed(seed))
    rows, cols = (erased != 0).any(0).nonzero(as_tuple=True)
    assert len(rows) > 0  # noise of 256 levels: an all-zero rectangle is out of reach
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    area = (bottom - top + 1) * (right - left + 1)
    assert area <= 40 * 40 / 3 + 80  # at most a third of the image (plus rounding)
    assert (erased[:, top : bottom + 1, left : right + 1] != 0).float().mean() > 0.9


def test_random_erase_probability_zero_leaves_the_image() -> None:
    image = _image()
    assert torch.equal(random_erase(image.clone(), 0.0, torch.Generator()), image)


def test_dataset_with_strong_augmentation_stays_deterministic(tmp_path: Path) -> None:
    cfg = DataConfig(source="synthetic", image_size=32, synthetic_classes=3, synthetic_per_class=8)
    prepared = prepare_dataset(cfg, tmp_path, progress=False)
    strong = AugmentConfig(trivial_augment=True, erase_prob=0.5)

    def epoch(augment: AugmentConfig) -> torch.Tensor:
        ds = ShardDataset(prepared, "train", 32, train=True, augment=augment, seed=5)
        return torch.stack([ds[i][0] for i in reversed(range(len(ds)))])

    assert torch.equal(epoch(strong), epoch(strong))
    assert not torch.equal(epoch(strong), epoch(AugmentConfig()))
