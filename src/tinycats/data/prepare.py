"""Prepare a dataset once: list the images of a source, split them, decode, pack, manifest.

`prepare_dataset` is idempotent and crash-safe. The prepared dir's name encodes every
setting that changes its content, so a dir whose manifest loads is exactly what was asked
for and is returned without any work (no download, no decoding). Otherwise the dataset is
built in a temporary sibling dir and renamed into place after its manifest is written: a
crash or an error leaves any earlier prepared dataset untouched.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tinycats.breeds import CAT_BREEDS, OTHER_CLASS
from tinycats.config import DataConfig
from tinycats.data import oxford
from tinycats.data.images import SkippedImage, decode_image
from tinycats.data.progress import make_progress
from tinycats.data.shards import (
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    Manifest,
    ShardWriter,
    load_manifest,
    plan_shards,
    write_manifest,
)
from tinycats.data.synthetic import render_synthetic, synthetic_class_names, synthetic_test_count
from tinycats.errors import DataError
from tinycats.storage.atomic import fsync_dir


@dataclass(frozen=True)
class PackItem:
    """One image to pack: `load(size)` returns it (H=W=size, RGB uint8) or raises SkippedImage."""

    name: str
    label: int
    split: str  # "trainval" before the val carve, then "train" | "val"; or "test"
    load: Callable[[int], np.ndarray]


@dataclass(frozen=True)
class SourcePlan:
    """Everything to pack from one source, before decoding."""

    source: str
    classes: list[str]
    items: list[PackItem]
    checksums: dict[str, str]


def resolve_data_root(cfg: DataConfig, out: Path) -> Path:
    """Where prepared datasets live: `data.dir` if set, else `<out>/data`."""
    return Path(cfg.dir) if cfg.dir else Path(out) / "data"


def prepared_name(cfg: DataConfig) -> str:
    """Dir name from the source and every setting that changes the packed content.

    e.g. synthetic-c4-n96-s72-v0.1-seed0, oxford-other-s144-v0.1-seed0,
    oxford-cats-mini-1a2b3c4d-s72-v0.1-seed0 (a folder: its name + a hash of its path).
    """
    if cfg.source == "synthetic":
        parts = [f"synthetic-c{cfg.synthetic_classes}-n{cfg.synthetic_per_class}"]
    else:
        if cfg.source == "oxford":
            parts = ["oxford"]
        else:
            folder = Path(cfg.source).expanduser().resolve()
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.name) or "folder"
            parts = [f"{slug}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"]
        if cfg.include_other:
            parts.append("other")
    parts += [f"s{cfg.stored_size}", f"v{cfg.val_fraction:g}", f"seed{cfg.seed}"]
    return "-".join(parts)


def prepare_dataset(
    cfg: DataConfig, data_root: Path, *, progress: bool = True, extract_dir: Path | None = None
) -> Path:
    """The prepared dir for `cfg` under `data_root`, building it only if it is not there.

    Images are stored as center-cropped squares of cfg.stored_size × stored_size (uint8
    RGB): one fixed shape makes shards plain memory-mappable arrays, and the margin over
    image_size leaves room for random crops. `cfg.source` is "synthetic", "oxford"
    (official archives downloaded into data_root/downloads, resumable and checksummed,
    extracted once into `extract_dir`, default data_root/oxford-iiit-pet) or any other
    string: a folder in Oxford layout (write ./oxford for a folder named oxford).
    Returns the dir (manifest.json inside).
    """
    data_root = Path(data_root)
    target = data_root / prepared_name(cfg)
    if _is_prepared(target):
        return target
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the data dir {data_root} ({err.strerror}); " + oxford.DATA_DIR_FIX
        ) from None
    plan = _plan_source(cfg, data_root, progress, extract_dir)
    _check_classes(plan)
    tmp = data_root / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        manifest = _pack(plan, tmp, cfg, progress)
        write_manifest(tmp, manifest)
        if _is_prepared(target):  # another process finished the same dataset meanwhile
            return target
        if target.exists():  # a half-written dir without a (valid) manifest
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_dir(data_root)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DataError(
                f"disk full while packing into {data_root}; free space or " + oxford.DATA_DIR_FIX
            ) from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_prepared(directory: Path) -> bool:
    """True if `directory` holds a complete dataset (an unreadable or outdated manifest
    means it does not, and it will be rebuilt)."""
    if not (directory / MANIFEST).is_file():
        return False
    try:
        load_manifest(directory)
    except DataError:
        return False
    return True


def _plan_source(
    cfg: DataConfig, data_root: Path, progress: bool, extract_dir: Path | None
) -> SourcePlan:
    if cfg.source == "synthetic":
        return _synthetic_plan(cfg)
    if cfg.source == "oxford":
        root, checksums = oxford.fetch_oxford(data_root, progress=progress, extract_dir=extract_dir)
        return _folder_plan(root, cfg, source="oxford", checksums=checksums)
    folder = Path(cfg.source).expanduser().resolve()
    return _folder_plan(folder, cfg, source=str(folder), checksums=None)


def _synthetic_plan(cfg: DataConfig) -> SourcePlan:
    classes = synthetic_class_names(cfg.synthetic_classes)
    items = []
    for split, per_class in (
        ("trainval", cfg.synthetic_per_class),
        ("test", synthetic_test_count(cfg.synthetic_per_class)),
    ):
        for label, name in enumerate(classes):
            for i in range(per_class):
                load = functools.partial(_render, label, i, seed=cfg.seed, split=split)
                items.append(PackItem(f"{name}_{split}_{i}", label, split, load))
    return SourcePlan(
        "synthetic",
        classes,
        carve_val(items, cfg.val_fraction, cfg.seed),
        {"generator": "tinycats.data.synthetic v1"},
    )


def _render(label: int, index: int, size: int, *, seed: int, split: str) -> np.ndarray:
    return render_synthetic(label, index, size, seed=seed, split=split)


def _folder_plan(
    root: Path, cfg: DataConfig, *, source: str, checksums: dict[str, str] | None
) -> SourcePlan:
    classes = [*CAT_BREEDS, *([OTHER_CLASS] if cfg.include_other else [])]
    index = {name: i for i, name in enumerate(classes)}
    items = [
        PackItem(it.name, index[it.label], it.split, functools.partial(_decode, it.path))
        for it in oxford.read_oxford_folder(root, cfg.include_other)
    ]
    checksums = checksums if checksums is not None else oxford.annotation_checksums(root)
    return SourcePlan(source, classes, carve_val(items, cfg.val_fraction, cfg.seed), checksums)


def _decode(path: Path, size: int) -> np.ndarray:
    return decode_image(path, size)


def carve_val(items: list[PackItem], val_fraction: float, seed: int) -> list[PackItem]:
    """Split "trainval" items into train and val: per class, round(n × val_fraction) images
    chosen by a permutation seeded with (seed, class), over items sorted by name so the
    annotation files' line order does not matter."""
    by_class: dict[int, list[PackItem]] = {}
    for item in items:
        if item.split == "trainval":
            by_class.setdefault(item.label, []).append(item)
    val_names = set()
    for label, members in by_class.items():
        members = sorted(members, key=lambda it: it.name)
        n_val = round(len(members) * val_fraction)
        order = np.random.default_rng([seed, label]).permutation(len(members))
        val_names |= {members[i].name for i in order[:n_val]}
    return [
        replace(it, split="val" if it.name in val_names else "train")
        if it.split == "trainval"
        else it
        for it in items
    ]


def _check_classes(plan: SourcePlan) -> None:
    present = Counter(it.label for it in plan.items if it.split == "train")
    for label, name in enumerate(plan.classes):
        if not present[label]:
            hint = (
                "drop --include-other"
                if name == OTHER_CLASS
                else "add its images to the annotations"
            )
            raise DataError(f"class {name!r} has no training images in {plan.source}; {hint}")


def _pack(plan: SourcePlan, directory: Path, cfg: DataConfig, progress: bool) -> Manifest:
    size = cfg.stored_size
    image_bytes = size * size * 3
    by_split = {split: [it for it in plan.items if it.split == split] for split in SPLITS}
    needed = sum(map(len, by_split.values())) * image_bytes + 2**20
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DataError(
            f"not enough disk space to pack: needs {needed / 1e9:.2f} GB in {directory.parent}, "
            f"{free / 1e9:.2f} GB free; free some space or " + oxford.DATA_DIR_FIX
        )
    shard_plan = plan_shards({s: len(v) for s, v in by_split.items() if v}, image_bytes)
    counts = {s: dict.fromkeys(plan.classes, 0) for s in SPLITS}
    skipped: Counter[str] = Counter()
    shards = []
    with make_progress(progress) as bar, ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        task = bar.add_task(
            f"pack {directory.name.split('.tmp-')[0].lstrip('.')}", total=len(plan.items)
        )
        for split, items in by_split.items():
            if not items:
                continue
            writer = ShardWriter(directory, split, shard_plan[split])
            for item, result in zip(
                items, pool.map(functools.partial(_load, size=size), items), strict=True
            ):
                if isinstance(result, str):
                    skipped[result] += 1
                    writer.add(None, item.label, item.name)
                else:
                    counts[split][plan.classes[item.label]] += 1
                    writer.add(result, item.label, item.name)
                bar.advance(task)
            shards += writer.shards
    empty = [c for c in plan.classes if not counts["train"][c]]
    if empty:
        raise DataError(
            f"every training image of class {empty[0]!r} in {plan.source} was unreadable; "
            "replace those files and run again"
        )
    return Manifest(
        version=FORMAT_VERSION,
        source=plan.source,
        classes=plan.classes,
        stored_size=size,
        counts=counts,
        skipped=dict(skipped),
        shards=shards,
        source_checksums=plan.checksums,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
    )


def _load(item: PackItem, *, size: int) -> np.ndarray | str:
    """The image, or the skip reason (returned, not raised, so one bad file cannot stop the
    thread pool's in-order iteration)."""
    try:
        return item.load(size)
    except SkippedImage as skip:
        return skip.reason
