"""prepare_dataset: naming, caching, crash safety, odd images, bad input, shard policy, CLI,
and the real photos of ../shared/data/oxford-cats-mini."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinycats.breeds import CAT_BREEDS
from tinycats.config import DataConfig
from tinycats.data import prepare, shards
from tinycats.data.dataset import ShardDataset
from tinycats.data.images import decode_image
from tinycats.data.prepare import prepare_dataset
from tinycats.data.shards import MANIFEST, file_count, load_manifest, plan_shards
from tinycats.data.synthetic import render_synthetic, synthetic_class_names, write_synthetic_folder
from tinycats.errors import DataError

SYNTH = DataConfig(
    source="synthetic", image_size=24, stored_scale=1.0, synthetic_classes=3, synthetic_per_class=10
)


def _fail(*args: object, **kwargs: object) -> None:
    raise AssertionError("a cache hit must do no work")


def test_synthetic_prepare_counts_and_name(tmp_path: Path) -> None:
    prepared = prepare_dataset(SYNTH, tmp_path, progress=False)
    assert prepared.name == "synthetic-c3-n10-s24-v0.1-seed0"
    m = load_manifest(prepared)
    assert m.classes == synthetic_class_names(3)
    assert m.counts["train"] == dict.fromkeys(m.classes, 9)
    assert m.counts["val"] == dict.fromkeys(m.classes, 1)
    assert m.counts["test"] == dict.fromkeys(m.classes, 2)  # a quarter of trainval
    assert m.skipped == {} and m.stored_size == 24
    assert [p.name for p in tmp_path.iterdir()] == [prepared.name]  # no temp dirs left


def test_pack_and_read_back_is_exact(tmp_path: Path) -> None:
    """Every stored pixel equals what the generator drew for that (split, class, index)."""
    prepared = prepare_dataset(SYNTH, tmp_path, progress=False)
    for split in ("train", "val", "test"):
        ds = ShardDataset(prepared, split, 24, train=False)
        for i in range(len(ds)):
            image, label = ds[i]
            source_split, index = (
                ("test" if split == "test" else "trainval"),
                int(ds.names[i].rsplit("_", 1)[1]),
            )
            expected = render_synthetic(label, index, 24, seed=0, split=source_split)
            assert same_pixels(image, expected), (split, i, ds.names[i])


def same_pixels(image: torch.Tensor, expected: np.ndarray) -> bool:
    """A dataset image (3, H, W) equals an (H, W, 3) array bit for bit."""
    return np.array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_multi_shard_round_trip_with_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "src"
    write_synthetic_folder(folder, trainval=3, test=1, size=32)
    (folder / "images" / "Bengal_trainval1.jpg").unlink()  # a missing file inside a shard
    monkeypatch.setattr(shards, "MIN_SHARD_BYTES", 5 * 16 * 16 * 3)  # 5 images per shard
    cfg = DataConfig(source=str(folder), image_size=16, stored_scale=1.0, val_fraction=0.0)
    m = load_manifest(prepared := prepare_dataset(cfg, tmp_path / "data", progress=False))
    assert len(m.split_shards("train")) == 8 and m.skipped == {"missing": 1}
    ds = ShardDataset(prepared, "train", 16, train=False)
    assert len(ds) == 35
    for i in range(len(ds)):
        expected = decode_image(folder / "images" / f"{ds.names[i]}.jpg", 16)
        assert same_pixels(ds[i][0], expected)
        assert ds.classes[ds[i][1]] == ds.names[i].rsplit("_", 1)[0]


def test_cache_hit_does_no_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = prepare_dataset(SYNTH, tmp_path, progress=False)
    stamp = (prepared / MANIFEST).stat().st_mtime_ns
    monkeypatch.setattr(prepare, "render_synthetic", _fail)
    monkeypatch.setattr(prepare, "decode_image", _fail)
    monkeypatch.setattr(prepare, "_plan_source", _fail)
    assert prepare_dataset(SYNTH, tmp_path, progress=False) == prepared
    assert (prepared / MANIFEST).stat().st_mtime_ns == stamp


def test_half_written_dir_is_rebuilt(tmp_path: Path) -> None:
    target = tmp_path / prepare.prepared_name(SYNTH)
    target.mkdir()
    (target / "train-000.npy").write_bytes(b"half")
    prepared = prepare_dataset(SYNTH, tmp_path, progress=False)
    assert prepared == target and load_manifest(target).total() == 3 * 12
    assert len(ShardDataset(target, "train", 24, train=False)) == 27


def test_synthetic_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = prepare_dataset(SYNTH, tmp_path / "a", progress=False)
    b = prepare_dataset(SYNTH, tmp_path / "b", progress=False)
    c = prepare_dataset(SYNTH.model_copy(update={"seed": 1}), tmp_path / "c", progress=False)
    assert c.name.endswith("seed1")
    for f in ("train-000.npy", "test-000.npy"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
        assert (a / f).read_bytes() != (c / f).read_bytes()


def _odd_folder(root: Path) -> Path:
    write_synthetic_folder(root, trainval=2, test=1, size=40)
    images = root / "images"
    rgb = Image.fromarray(render_synthetic(0, 0, 40, seed=5))
    data = (images / "Abyssinian_trainval0.jpg").read_bytes()
    (images / "Abyssinian_trainval0.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    rgb.convert("CMYK").save(images / "Bengal_trainval0.jpg")
    rgb.convert("L").save(images / "Birman_trainval0.jpg", format="JPEG")
    rgb.convert("P").save(images / "Bombay_trainval0.jpg", format="PNG")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: must come out white
    rgba.save(images / "British_Shorthair_trainval0.jpg", format="PNG")
    (images / "Egyptian_Mau_trainval0.jpg").unlink()
    (images / "Maine_Coon_trainval0.jpg").write_bytes(b"not an image at all")
    return root


def test_odd_images_converted_or_skipped_and_counted(tmp_path: Path) -> None:
    folder = _odd_folder(tmp_path / "odd")
    cfg = DataConfig(source=str(folder), image_size=32, stored_scale=1.0, val_fraction=0.0)
    prepared = prepare_dataset(cfg, tmp_path / "data", progress=False)
    m = load_manifest(prepared)
    assert m.skipped == {"unreadable": 2, "missing": 1}
    assert m.counts["train"]["Abyssinian"] == 1 and m.counts["train"]["Bengal"] == 2
    assert m.total("train") == 24 - 3 and m.total("test") == 12
    ds = ShardDataset(prepared, "train", 32, train=False)
    by_name = {name: ds[i][0] for i, name in enumerate(ds.names)}
    assert (by_name["British_Shorthair_trainval0"] == 255).all()
    gray = by_name["Birman_trainval0"]
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()
    assert by_name["Bombay_trainval0"].shape == (3, 32, 32)


def test_empty_class_fails_and_keeps_prepared_data(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    write_synthetic_folder(folder, trainval=2, test=1, size=32)
    data = tmp_path / "data"
    cfg = DataConfig(source=str(folder), image_size=16, stored_scale=1.0, val_fraction=0.0)
    good = prepare_dataset(cfg, data, progress=False)
    trainval = folder / "annotations" / "trainval.txt"
    original = trainval.read_text()
    trainval.write_text(
        "".join(line + "\n" for line in trainval.read_text().splitlines() if "Sphynx" not in line)
    )
    with pytest.raises(DataError, match="class 'Sphynx' has no training images"):
        prepare_dataset(cfg.model_copy(update={"image_size": 20}), data, progress=False)
    # every image of a class unreadable: same outcome, found after decoding
    trainval.write_text(original)
    for path in (folder / "images").glob("Persian_*"):
        path.write_bytes(b"junk")
    with pytest.raises(DataError, match=r"class 'Persian' in .* was unreadable"):
        prepare_dataset(cfg.model_copy(update={"image_size": 24}), data, progress=False)
    assert sorted(p.name for p in data.iterdir()) == [good.name]
    assert load_manifest(good).total() == 36


def test_no_disk_space_is_one_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare.shutil, "disk_usage", lambda _: _Usage())
    with pytest.raises(DataError, match=r"not enough disk space to pack: needs .* free some space"):
        prepare_dataset(SYNTH, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


class _Usage:
    total, used, free = 10**6, 10**6 - 10, 10


def test_missing_data_dir_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(
            DataConfig(source=str(tmp_path / "nope")), tmp_path / "data", progress=False
        )


@pytest.mark.parametrize("size", [144, 288, 576])
def test_full_oxford_fits_in_32_files(size: int) -> None:
    counts = {"train": 3312, "val": 368, "test": 3669}  # the official 7,349 annotated images
    assert file_count(counts, size * size * 3) <= 32
    plan = plan_shards(counts, size * size * 3)
    assert {s: sum(v) for s, v in plan.items()} == counts
    assert all(max(v) - min(v) <= 1 for v in plan.values())  # no tiny remainder shard
    assert plan_shards({"train": 10, "val": 0}, 1000) == {"train": [10], "val": []}


def test_cli_prepare_info_and_errors(tmp_path: Path, cli) -> None:
    out = str(tmp_path / "out")
    args = ("--source", "synthetic", "--size", "16", "--set", "data.synthetic_per_class=4")
    prepared = cli("data", "prepare", *args, "--out", out)
    assert prepared.returncode == 0, prepared.stderr
    assert "synthetic-c4-n4-s18-v0.1-seed0" in prepared.stdout
    info = cli("data", "info", "--out", out, "--json")
    assert info.returncode == 0
    assert json.loads(info.stdout)[0]["counts"]["test"] == dict.fromkeys(
        synthetic_class_names(4), 1
    )
    missing = cli("data", "prepare", "--source", str(tmp_path / "missing"), "--out", out)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    empty = cli("data", "info", "--data-dir", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "no prepared datasets" in empty.stderr


def test_oxford_cats_mini_real_photos(tmp_path: Path, oxford_mini: Path) -> None:
    mini = oxford_mini
    cfg = DataConfig(source=str(mini), image_size=32)
    prepared = prepare_dataset(cfg, tmp_path, progress=False)
    m = load_manifest(prepared)
    assert m.classes == list(CAT_BREEDS) and m.skipped == {}
    trainval = [
        line.split()[0] for line in (mini / "annotations/trainval.txt").read_text().splitlines()
    ]
    test = [line.split()[0] for line in (mini / "annotations/test.txt").read_text().splitlines()]
    assert (len(trainval), len(test)) == (952, 236)
    assert m.total("train") + m.total("val") == 952 and m.total("test") == 236
    for breed in CAT_BREEDS:
        n = sum(name.rsplit("_", 1)[0] == breed for name in trainval)
        assert m.counts["train"][breed] + m.counts["val"][breed] == n
        assert m.counts["val"][breed] == round(n * 0.1)
    ds = ShardDataset(prepared, "test", 32, train=False, breeds=["Sphynx", "Bombay"])
    assert ds.classes == ["Sphynx", "Bombay"] and set(ds.targets.tolist()) == {0, 1}
    assert len(ds) == m.counts["test"]["Sphynx"] + m.counts["test"]["Bombay"]


def test_unwritable_data_dir_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(DataError, match="cannot create the data dir"):
        prepare_dataset(SYNTH, blocker / "data", progress=False)
