"""Packed shards: a prepared dataset as a few uint8 .npy files plus a manifest written last.

Layout of a prepared dir:

    <split>-<k>.npy    (N, S, S, 3) uint8 images, S = stored_size, readable with mmap
    manifest.json      classes, counts, skips, checksums and, per shard, labels and names

The manifest is the completion marker: a dir holds a dataset iff its manifest loads.
Labels live in the manifest (a few KB for thousands of images) rather than in extra
files, so a Modal v1 volume holds a dozen files instead of ~7,400 JPEGs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinycats.errors import DataError
from tinycats.storage.atomic import synced_file, write_json_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")

MIN_SHARD_BYTES = 64 * 2**20
"""Shards are at least this big (fewer, larger files are cheaper on network volumes)..."""
MAX_SHARDS = 24
"""...and at most this many in all (+ at most one partial shard per split + manifest ≤ 28
files), whatever the resolution: the dataset stays far below Modal's file-count limits."""


def plan_shards(split_counts: dict[str, int], image_bytes: int) -> dict[str, list[int]]:
    """Images per shard for each split: the shard size policy as a pure function.

    Shard capacity = max(MIN_SHARD_BYTES, total bytes / MAX_SHARDS), so small datasets get
    one shard per split and large ones never exceed MAX_SHARDS + len(SPLITS) shards. A
    split's images are spread evenly over its shards (sizes differ by at most one), so no
    shard is a tiny remainder.
    """
    total = sum(split_counts.values()) * image_bytes
    capacity = max(1, max(MIN_SHARD_BYTES, math.ceil(total / MAX_SHARDS)) // image_bytes)
    plan = {}
    for split, count in split_counts.items():
        n_shards = math.ceil(count / capacity)
        base, extra = divmod(count, n_shards) if n_shards else (0, 0)
        plan[split] = [base + 1] * extra + [base] * (n_shards - extra)
    return plan


def file_count(split_counts: dict[str, int], image_bytes: int) -> int:
    """Files in a prepared dir: every planned shard plus the manifest."""
    return sum(len(v) for v in plan_shards(split_counts, image_bytes).values()) + 1


@dataclass(frozen=True)
class ShardInfo:
    """One shard file and what is in it (labels index `Manifest.classes`)."""

    file: str
    split: str
    count: int
    bytes: int
    labels: list[int]
    names: list[str]


@dataclass(frozen=True)
class Manifest:
    """What a prepared dir holds; written last, so its presence means 'complete'."""

    version: int
    source: str
    classes: list[str]
    stored_size: int
    counts: dict[str, dict[str, int]]  # split -> class -> n
    skipped: dict[str, int]  # reason -> n
    shards: list[ShardInfo]
    source_checksums: dict[str, str]
    val_fraction: float = 0.0
    seed: int = 0

    def split_shards(self, split: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == split]

    def total(self, split: str | None = None) -> int:
        splits = [split] if split else list(self.counts)
        return sum(sum(self.counts[s].values()) for s in splits)

    def to_dict(self, *, labels: bool = True) -> dict[str, Any]:
        """JSON-ready dict; labels=False drops the per-image labels and names (for display)."""
        raw = asdict(self)
        if not labels:
            for shard in raw["shards"]:
                del shard["labels"], shard["names"]
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        return cls(**{**raw, "shards": [ShardInfo(**s) for s in raw["shards"]]})


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically and durably write the manifest: the last step of a build, so a dir
    with a manifest is a complete one."""
    write_json_atomic(directory / MANIFEST, manifest.to_dict())


def load_manifest(prepared_dir: Path) -> Manifest:
    """The manifest of a prepared dir, checked against the shard files it lists.

    Raises DataError (with the fix) when the dir is missing, half-written, from another
    format version, or a shard is missing or has the wrong size.
    """
    path = Path(prepared_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no prepared dataset at {prepared_dir} ({MANIFEST} missing); run `tinycats data prepare`"
        )
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != FORMAT_VERSION:
            raise DataError(
                f"{path} has format version {raw.get('version')}, this tinycats reads "
                f"{FORMAT_VERSION}; delete {prepared_dir} and run `tinycats data prepare` again"
            )
        manifest = Manifest.from_dict(raw)
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as err:
        raise DataError(
            f"{path} is not a valid manifest ({err}); delete {prepared_dir} and run "
            "`tinycats data prepare` again"
        ) from None
    for shard in manifest.shards:
        shard_path = Path(prepared_dir) / shard.file
        if not shard_path.is_file() or shard_path.stat().st_size != shard.bytes:
            raise DataError(
                f"shard {shard_path} is missing or has the wrong size; delete {prepared_dir} "
                "and run `tinycats data prepare` again"
            )
    return manifest


def open_shard(path: Path) -> np.ndarray:
    """(N, S, S, 3) uint8 memory map: pages are read on access, nothing is copied up front.

    Returned as a plain ndarray view of the map: indexing an np.memmap subclass costs
    more than the small crop a sample then copies out of it.
    """
    return np.asarray(np.load(path, mmap_mode="r"))


class ShardWriter:
    """Fill shards of one split in order, each saved once it holds its planned count.

    A skipped image leaves a shard short rather than shifting the plan, so shard sizes
    follow the policy and a shard is written exactly once.
    """

    def __init__(self, directory: Path, split: str, planned: list[int]) -> None:
        self.directory, self.split, self.planned = directory, split, planned
        self.shards: list[ShardInfo] = []
        self._images: list[np.ndarray] = []
        self._labels: list[int] = []
        self._names: list[str] = []
        self._seen = 0  # images offered to the current shard, skipped ones included

    def add(self, image: np.ndarray | None, label: int, name: str) -> None:
        """Add one image (None = skipped), flushing the shard when its plan is reached."""
        if image is not None:
            self._images.append(image)
            self._labels.append(label)
            self._names.append(name)
        self._seen += 1
        if self._seen == self.planned[len(self.shards)]:
            self._flush()

    def _flush(self) -> None:
        index = len(self.shards)
        self._seen = 0
        if not self._images:  # every image of this shard was skipped
            self.planned = self.planned[:index] + self.planned[index + 1 :]
            return
        file = f"{self.split}-{index:03d}.npy"
        with synced_file(self.directory / file) as f:  # the manifest must not outlive it
            np.save(f, np.stack(self._images))
        self.shards.append(
            ShardInfo(
                file=file,
                split=self.split,
                count=len(self._images),
                bytes=(self.directory / file).stat().st_size,
                labels=self._labels,
                names=self._names,
            )
        )
        self._images, self._labels, self._names = [], [], []
