"""Loader throughput: packed uint8 shards vs decoding the JPEG folder with PIL each epoch,
and the file count of the full prepared Oxford dataset under the shard size policy.

Both loaders do the same work per image: a random resized crop to 128 px (scale
0.35-1), a horizontal flip and a light colour jitter, batched by a DataLoader with 2
workers. Goal: shards >= 5x faster; full dataset <= 32 files.

    python benchmarks/loader_throughput.py            # ~1 min
    python benchmarks/loader_throughput.py --smoke    # a few seconds

Images: ../shared/data/oxford-cats-mini (or $TINYCATS_OXFORD_MINI) if present, else
synthetic JPEGs written to a temporary folder in the same layout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
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

    def __init__(self, paths: list[Path], labels: list[int], augment: AugmentConfig) -> None:
        self.paths, self.labels = paths, labels
        j = augment.color_jitter
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(IMAGE_SIZE, scale=(augment.crop_scale_min, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ColorJitter(brightness=j, contrast=j, saturation=j),
                transforms.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB")), self.labels[i]


def interleaved_rates(datasets: dict[str, Dataset], epochs: int) -> dict[str, float]:
    """Images/s per dataset over `epochs` epochs after one warm-up epoch each.

    The epochs of the loaders alternate (A, B, A, B, ...) so that load from other
    processes on a shared machine hits both alike instead of skewing the ratio.
    """
    loaders = {
        name: DataLoader(
            ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True
        )
        for name, ds in datasets.items()
    }
    seconds = dict.fromkeys(loaders, 0.0)
    images = dict.fromkeys(loaders, 0)
    for epoch in range(epochs + 1):
        for name, loader in loaders.items():
            start, n = time.perf_counter(), 0
            for batch, _labels in loader:
                n += len(batch)
            if epoch:  # epoch 0 warms up workers and the page cache
                seconds[name] += time.perf_counter() - start
                images[name] += n
    return {name: images[name] / seconds[name] for name in loaders}


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
    args = parser.parse_args()
    epochs = 1 if args.smoke else 5

    with tempfile.TemporaryDirectory() as tmp:
        folder = mini_folder()
        if folder is None:
            folder = Path(tmp) / "synthetic-jpegs"
            write_synthetic_folder(folder, trainval=10 if args.smoke else 80, test=2, size=240)
            what = f"synthetic JPEGs in {folder}"
        else:
            what = f"oxford-cats-mini ({folder})"
        cfg = DataConfig(source=str(folder), image_size=IMAGE_SIZE)
        start = time.perf_counter()
        prepared = prepare_dataset(cfg, Path(tmp) / "data", progress=False)
        prepare_s = time.perf_counter() - start

        shards = ShardDataset(prepared, "train", IMAGE_SIZE, train=True, augment=cfg.augment)
        if args.smoke:
            shards = torch.utils.data.Subset(shards, range(min(256, len(shards))))
        base = shards.dataset if isinstance(shards, torch.utils.data.Subset) else shards
        indices = (
            shards.indices if isinstance(shards, torch.utils.data.Subset) else range(len(base))
        )
        pil = PILFolder(
            [folder / "images" / f"{base.names[i]}.jpg" for i in indices],
            [int(base.targets[i]) for i in indices],
            cfg.augment,
        )

        torch.set_num_threads(1)  # the workers do the work; keep the main process out of the way
        rates = interleaved_rates({"shards": shards, "pil": pil}, epochs)
        shard_rate, pil_rate = rates["shards"], rates["pil"]
        manifest = load_manifest(prepared)

    print(
        f"images: {what}; {len(pil)} train images, {epochs} epoch(s) each after a warm-up, interleaved"
    )
    print(f"prepare (decode + pack once): {prepare_s:.1f} s, stored {manifest.stored_size} px")
    print(
        f"loader throughput at {IMAGE_SIZE} px, augmentation on, {WORKERS} workers, batch {BATCH}:"
    )
    print(f"  {'packed shards':<24}{shard_rate:>10.0f} images/s")
    print(f"  {'PIL JPEG folder':<24}{pil_rate:>10.0f} images/s")
    print(f"  {'speed-up':<24}{shard_rate / pil_rate:>10.1f}x   (goal >= 5x)")

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
