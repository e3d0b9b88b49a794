"""The data layer: Oxford-IIIT Pet cats (or a folder, or synthetic images) prepared once
into a few memory-mappable uint8 shards, a deterministic augmenting Dataset over them,
and a sampler that resumes mid-epoch.

    prepared = prepare_dataset(cfg.data, resolve_data_root(cfg.data, out))
    train = ShardDataset(prepared, "train", cfg.data.image_size, train=True, seed=cfg.seed)
    sampler = ResumableSampler(len(train), seed=cfg.seed)
"""

from tinycats.data.dataset import ShardDataset, central_box, close_open_shards, resize_crop
from tinycats.data.images import SkippedImage, decode_image
from tinycats.data.oxford import (
    OXFORD_ARCHIVES,
    Archive,
    download,
    extract_once,
    parse_annotation_file,
)
from tinycats.data.prepare import prepare_dataset, prepared_name, resolve_data_root
from tinycats.data.sampler import ResumableSampler
from tinycats.data.shards import Manifest, ShardInfo, file_count, load_manifest, plan_shards
from tinycats.data.synthetic import render_synthetic, synthetic_class_names

__all__ = [
    "OXFORD_ARCHIVES",
    "Archive",
    "Manifest",
    "ResumableSampler",
    "ShardDataset",
    "ShardInfo",
    "SkippedImage",
    "central_box",
    "close_open_shards",
    "decode_image",
    "download",
    "extract_once",
    "file_count",
    "load_manifest",
    "parse_annotation_file",
    "plan_shards",
    "prepare_dataset",
    "prepared_name",
    "render_synthetic",
    "resize_crop",
    "resolve_data_root",
    "synthetic_class_names",
]
