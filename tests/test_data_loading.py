"""ShardDataset augmentation determinism and ResumableSampler save/restore."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from tinycats.config import AugmentConfig, DataConfig
from tinycats.data import ResumableSampler, ShardDataset, prepare_dataset
from tinycats.data.dataset import central_box, color_jitter
from tinycats.errors import DataError


@pytest.fixture(scope="module")
def prepared(module_tmp: Path) -> Path:
    cfg = DataConfig(source="synthetic", image_size=32, synthetic_classes=3, synthetic_per_class=8)
    return prepare_dataset(cfg, module_tmp, progress=False)


def _all(ds: ShardDataset) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_train_items_shape_and_determinism(prepared: Path) -> None:
    a = ShardDataset(prepared, "train", 32, train=True, seed=7)
    b = ShardDataset(prepared, "train", 32, train=True, seed=7)
    image, label = a[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == int(a.targets[3])
    assert torch.equal(_all(a), _all(b))
    # reading in another order gives the same pixels per index
    assert all(torch.equal(a[i][0], b[i][0]) for i in reversed(range(len(a))))
    b.set_epoch(1)
    assert not torch.equal(_all(a), _all(b))
    a.set_epoch(1)
    assert torch.equal(_all(a), _all(b))
    c = ShardDataset(prepared, "train", 32, train=True, seed=8)
    assert not torch.equal(_all(a), _all(c))


def test_augmentation_independent_of_worker_count(prepared: Path) -> None:
    ds = ShardDataset(prepared, "train", 24, train=True, seed=3)
    ds.set_epoch(2)
    main = torch.cat([x for x, _ in DataLoader(ds, batch_size=5, num_workers=0)])
    workers = torch.cat([x for x, _ in DataLoader(ds, batch_size=5, num_workers=2)])
    assert torch.equal(main, workers)


def test_each_augmentation_does_what_it_says(prepared: Path) -> None:
    plain = _all(ShardDataset(prepared, "train", 36, train=False))

    def train_set(**augment: float | bool) -> torch.Tensor:
        cfg = AugmentConfig(
            **{"crop_scale_min": 1.0, "hflip": False, "color_jitter": 0.0, **augment}
        )
        return _all(ShardDataset(prepared, "train", 36, train=True, augment=cfg))

    # full-area crops of a square are the whole square: all augmentations off = identity
    assert torch.equal(train_set(), plain)
    flipped = train_set(hflip=True)
    same = [torch.equal(f, p) for f, p in zip(flipped, plain, strict=True)]
    mirrored = [torch.equal(f, p.flip(-1)) for f, p in zip(flipped, plain, strict=True)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True)) and 0 < sum(mirrored) < len(
        plain
    )
    jitter = train_set(color_jitter=0.3).float()
    assert 0 < (jitter - plain.float()).abs().mean() < 40
    cropped = train_set(crop_scale_min=0.3)
    assert cropped.shape == plain.shape and not torch.equal(cropped, plain)


def test_eval_is_resize_of_stored_square(prepared: Path) -> None:
    ds = ShardDataset(prepared, "val", 18, train=False)
    stored = ds.stored(0)
    assert stored.shape == (3, 36, 36)
    assert ds[0][0].shape == (3, 18, 18)
    assert torch.equal(ds[0][0], ds[0][0])
    # a 2× downscale with antialias is close to 2×2 average pooling
    pooled = torch.nn.functional.avg_pool2d(stored.float()[None], 2)[0]
    assert (ds[0][0].float() - pooled).abs().mean() < 3


def test_eval_crop_is_the_resized_central_square(prepared: Path) -> None:
    assert central_box(36, 36, 0.75) == (4, 4, 27, 27)
    assert central_box(36, 36, 1.0) == (0, 0, 36, 36)
    whole = ShardDataset(prepared, "val", 18, train=False)
    central = ShardDataset(prepared, "val", 18, train=False, eval_crop=0.5)
    stored = whole.stored(0)  # (3, 36, 36)
    assert torch.equal(central[0][0], stored[:, 9:27, 9:27])  # the central 18 px, unresized
    assert not torch.equal(central[0][0], whole[0][0])
    assert central[0][1] == whole[0][1]


def test_breeds_filter_reindexes(prepared: Path) -> None:
    full = ShardDataset(prepared, "test", 32, train=False)
    names = full.classes
    sub = ShardDataset(prepared, "test", 32, train=False, breeds=[names[2], names[0]])
    assert sub.classes == [names[2], names[0]]
    assert len(sub) == int((full.targets == 2).sum() + (full.targets == 0).sum())
    assert set(sub.targets.tolist()) == {0, 1}
    first_class2 = int((full.targets == 2).nonzero()[0])
    assert torch.equal(sub[int((sub.targets == 0).nonzero()[0])][0], full[first_class2][0])
    with pytest.raises(DataError, match="not in"):
        ShardDataset(prepared, "test", 32, train=False, breeds=["Bengal"])


def test_dataset_pickles_without_memory_maps(prepared: Path) -> None:
    ds = ShardDataset(prepared, "train", 32, train=False)
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the images stay on disk
    assert torch.equal(pickle.loads(blob)[1][0], ds[1][0])


def test_sampler_permutation_depends_only_on_seed_and_epoch() -> None:
    s = ResumableSampler(50, seed=1)
    order0 = list(s)
    assert sorted(order0) == list(range(50)) and order0 != list(range(50))
    assert list(ResumableSampler(50, seed=1)) == order0
    assert list(ResumableSampler(50, seed=2)) != order0
    s.set_epoch(1)
    assert list(s) != order0
    assert list(ResumableSampler(50, seed=1, shuffle=False)) == list(range(50))


def test_sampler_save_restore_mid_epoch_gives_same_remaining_order() -> None:
    batch = 4
    run = ResumableSampler(37, seed=5)
    run.set_epoch(3)
    loader = DataLoader(range(37), batch_size=batch, sampler=run, num_workers=0)
    seen, saved = [], None
    for i, b in enumerate(loader):  # the loader prefetches; position follows consumption
        seen += b.tolist()
        run.mark_consumed(len(b))
        if i == 4:
            saved = dict(run.state_dict())
    assert saved == {"epoch": 3, "position": 20}

    resumed = ResumableSampler(37, seed=5)
    resumed.load_state_dict(saved)
    resumed.set_epoch(3)  # the engine re-announcing the same epoch keeps the position
    assert len(resumed) == 17
    rest = [int(i) for b in DataLoader(range(37), batch_size=batch, sampler=resumed) for i in b]
    assert seen[20:] == rest
    resumed.set_epoch(4)
    assert resumed.state_dict() == {"epoch": 4, "position": 0} and len(list(resumed)) == 37


def test_sampler_rejects_impossible_positions() -> None:
    s = ResumableSampler(10)
    with pytest.raises(ValueError):
        s.load_state_dict({"epoch": 0, "position": 11})
    s.mark_consumed(10)
    with pytest.raises(ValueError):
        s.mark_consumed(1)


def test_fused_color_jitter_matches_torchvision_without_clipping() -> None:
    image = torch.randint(90, 160, (3, 20, 20), dtype=torch.uint8)  # mid-range: nothing clips
    factors = (
        1.0 + 0.1 * (2 * torch.rand(3, generator=torch.Generator().manual_seed(4)) - 1)
    ).tolist()
    b, c, s = factors
    # torchvision on floats in [0, 1] (its uint8 path truncates after each of its 3 steps)
    x = image.float() / 255
    expected = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x, b), c), s) * 255
    out = color_jitter(image, 0.1, torch.Generator().manual_seed(4))
    assert out.dtype == torch.uint8 and out.is_contiguous()
    assert (out.float() - expected).abs().max() <= 0.5 + 1e-3  # the fused pass only rounds once
