"""Loader throughput: packed uint8 shards vs decoding the JPEG folder with PIL each epoch,
and the file count of the full prepared Oxford dataset under the shard size policy.

Both loaders do the same work per image: a random resized crop to 128 px (scale
0.35-1), a horizontal flip and a light colour jitter, batched by a DataLoader with 2
workers. Goal: shards >= 5x faster; full dataset <= 32 files.

    python benchmarks/loader_throughput.py            # ~1 min
    python benchmarks/loader_throughput.py --smoke    # a few seconds

Images: ../shared/data/oxford-cats-mini (or $TINYCATS_OXFORD_MINI) if present, else (or
with --jpeg-size N) synthetic JPEGs written to a temporary folder in the same layout.
The mini set is re-encoded at 160 px, so its JPEGs decode ~4x faster than the full
dataset's photos: it is the hardest case for the shards' advantage.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision import transforms

from tinycats.config import AugmentConfig, DataConfig
from tinycats.data import ShardDataset, prepare_dataset
from tinycats.data.shards import file_count, load_manifest, plan_shards
from tinycats.data.synthetic import write_synthetic_folder

IMAGE_SIZE = 128
WORKERS = 2
BATCH = 64
OXFORD_SPLITS = {"trainval": 3680, "test": 3669}
"""The official Oxford-IIIT Pet split sizes (cats and dogs: 7,349 annotated images)."""


class PILFolder(Dataset):
    """The baseline: open the JPEG, convert to RGB and augment with torchvision on PIL."""

    def __init__(
        self, paths: list[Path], labels: list[int], augment: AugmentConfig, jitter: bool
    ) -> None:
        self.paths, self.labels = paths, labels
        j = augment.color_jitter
        steps = [
            transforms.RandomResizedCrop(IMAGE_SIZE, scale=(augment.crop_scale_min, 1.0)),
            transforms.RandomHorizontalFlip(),
        ]
        if jitter:
            steps.append(transforms.ColorJitter(brightness=j, contrast=j, saturation=j))
        self.transform = transforms.Compose([*steps, transforms.PILToTensor()])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


@dataclass
class Tally:
    """Images, wall seconds and CPU seconds (loader workers + main process) of one loader."""

    images: int = 0
    wall: float = 0.0
    cpu: float = 0.0


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the DataLoader workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def interleaved(datasets: dict[str, Dataset], epochs: int) -> dict[str, Tally]:
    """Run `epochs` epochs of each loader after one warm-up epoch each, alternating loaders
    (A, B, C, A, B, C, ...) so load from other processes hits all alike. Workers are not
    persistent: they exit at the end of each epoch, which lets their CPU time be counted;
    CPU seconds per image do not depend on how busy the machine is, wall time does."""
    tallies = {name: Tally() for name in datasets}
    for epoch in range(epochs + 1):
        for name, ds in datasets.items():
            loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS)
            wall, cpu, n = time.perf_counter(), _cpu_seconds(), 0
            for batch, _labels in loader:
                n += len(batch)
            if epoch:  # epoch 0 warms up the page cache
                tallies[name].images += n
                tallies[name].wall += time.perf_counter() - wall
                tallies[name].cpu += _cpu_seconds() - cpu
    return tallies


def mini_folder() -> Path | None:
    env = os.environ.get("TINYCATS_OXFORD_MINI")
    path = (
        Path(env)
        if env
        else Path(__file__).resolve().parents[1].parent / "shared/data/oxford-cats-mini"
    )
    return path if (path / "annotations" / "trainval.txt").is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="one short epoch, tiny synthetic fallback"
    )
    parser.add_argument(
        "--jpeg-size",
        type=int,
        default=0,
        help="use synthetic JPEGs of this many px (e.g. 450, the size of the full dataset's "
        "~500x375 photos) instead of oxford-cats-mini's 160 px re-encodes",
    )
    args = parser.parse_args()
    epochs = 1 if args.smoke else 3

    with tempfile.TemporaryDirectory() as tmp:
        folder = None if args.jpeg_size else mini_folder()
        if folder is None:
            folder = Path(tmp) / "synthetic-jpegs"
            size = args.jpeg_size or 240
            write_synthetic_folder(folder, trainval=10 if args.smoke else 80, test=2, size=size)
            what = f"synthetic {size} px JPEGs"
        else:
            what = f"oxford-cats-mini ({folder})"
        cfg = DataConfig(source=str(folder), image_size=IMAGE_SIZE)
        start = time.perf_counter()
        prepared = prepare_dataset(cfg, Path(tmp) / "data", progress=False)
        prepare_s = time.perf_counter() - start

        base = ShardDataset(prepared, "train", IMAGE_SIZE, train=True, augment=cfg.augment)
        indices = list(range(min(256, len(base)) if args.smoke else len(base)))
        shards = torch.utils.data.Subset(base, indices)
        paths = [folder / "images" / f"{base.names[i]}.jpg" for i in indices]
        labels = [int(base.targets[i]) for i in indices]
        loaders = {
            "packed shards (crop+flip+jitter)": shards,
            "PIL folder (crop+flip+jitter)": PILFolder(paths, labels, cfg.augment, jitter=True),
            "PIL folder (crop+flip only)": PILFolder(paths, labels, cfg.augment, jitter=False),
        }
        # An "epoch" passes each image `repeats` times so that starting the workers, which
        # the CPU count includes, is amortised as it is in a real (longer) epoch.
        repeats = 1 if args.smoke else 4
        loaders = {name: ConcatDataset([ds] * repeats) for name, ds in loaders.items()}
        torch.set_num_threads(1)  # the workers do the work; keep the main process out of the way
        tallies = interleaved(loaders, epochs)
        manifest = load_manifest(prepared)

    print(
        f"images: {what}; {len(paths)} train images x {repeats} per epoch, "
        f"{epochs} epoch(s) each after a warm-up, interleaved"
    )
    print(f"prepare (decode + pack once): {prepare_s:.1f} s, stored {manifest.stored_size} px")
    print(
        f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall figures depend on it)"
    )
    print(
        f"loader throughput at {IMAGE_SIZE} px, augmentation on, {WORKERS} workers, batch {BATCH}:"
    )
    print(
        f"  {'':<34}{'images/s':>10}{'CPU ms/image':>14}{'speed-up (wall)':>17}{'speed-up (CPU)':>16}"
    )
    ref = tallies["packed shards (crop+flip+jitter)"]
    for name, t in tallies.items():
        print(
            f"  {name:<34}{t.images / t.wall:>10.0f}{1000 * t.cpu / t.images:>14.2f}"
            f"{(ref.images / ref.wall) / (t.images / t.wall):>16.1f}x{(t.cpu / t.images) / (ref.cpu / ref.images):>15.1f}x"
        )
    print("  (speed-up = packed shards over that row; goal >= 5x over the PIL folder)")

    print("files in the prepared full Oxford-IIIT Pet (7,349 images incl. dogs, val 10%):")
    for size in (64, IMAGE_SIZE, 256, 512):
        stored = DataConfig(image_size=size).stored_size
        val = round(OXFORD_SPLITS["trainval"] * cfg.val_fraction)
        counts = {
            "train": OXFORD_SPLITS["trainval"] - val,
            "val": val,
            "test": OXFORD_SPLITS["test"],
        }
        plan = plan_shards(counts, stored * stored * 3)
        total_mib = sum(counts.values()) * stored * stored * 3 / 2**20
        shards_per_split = ", ".join(f"{s} {len(v)}" for s, v in plan.items())
        print(
            f"  image_size {size:>3} (stored {stored:>3} px, {total_mib:6.0f} MiB): "
            f"{file_count(counts, stored * stored * 3):>2} files ({shards_per_split}, manifest 1)   (goal <= 32)"
        )


if __name__ == "__main__":
    main()
