"""A run's data: the prepared train/validation splits, and the endless, resumable batch stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from tinycats.config import TrainConfig
from tinycats.data import ResumableSampler, ShardDataset, prepare_dataset, resolve_data_root
from tinycats.errors import ConfigError
from tinycats.train.distributed import Distributed, check_divisible
from tinycats.train.schedule import train_image_size


@dataclass
class TrainingData:
    """The splits a run trains and validates on, and their class names (in label order)."""

    train_set: ShardDataset
    val_set: ShardDataset
    classes: list[str]


def load_training_data(config: TrainConfig, store_root: Path) -> TrainingData:
    """Prepare the configured dataset (once; later runs reuse the shards) and open its splits."""
    prepared = prepare_dataset(config.data, resolve_data_root(config.data, store_root))
    breeds = config.data.breeds or None
    train_set = ShardDataset(
        prepared,
        "train",
        config.data.image_size,
        train=True,
        augment=config.data.augment,
        seed=config.seed,
        breeds=breeds,
    )
    val_set = ShardDataset(
        prepared,
        "val",
        config.eval_image_size,
        train=False,
        breeds=breeds,
        eval_crop=config.eval_crop,
    )
    return TrainingData(train_set, val_set, list(train_set.classes))


def validation_loader(
    val_set: ShardDataset, config: TrainConfig, shard: range | None = None
) -> DataLoader:
    """The validation split (or this rank's `shard` of it) in a fixed order, in batches of
    at least 64."""
    return DataLoader(
        val_set if shard is None else Subset(val_set, shard),
        batch_size=max(config.optim.batch_size, 64),
        shuffle=False,
        num_workers=config.data.num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )


class EpochBatches:
    """An endless stream of batches that knows its place: (epoch, global samples consumed).

    `optim.batch_size` is the global micro-batch; under data parallelism this rank's
    loader yields its share of each (the sampler's docstring), and the place is counted
    in global samples, so it means the same for any number of ranks.
    The loader gets its own generator so creating an iterator never draws from the
    global torch RNG (it would on resume and not otherwise, breaking exactness).
    """

    def __init__(
        self,
        dataset: ShardDataset,
        config: TrainConfig,
        device: torch.device,
        dist: Distributed | None = None,
    ):
        dist = dist or Distributed()
        self.dataset = dataset
        self.batch_size = config.optim.batch_size
        if len(dataset) < self.batch_size:
            raise ConfigError(
                f"optim.batch_size={self.batch_size} is larger than the training split "
                f"({len(dataset)} images); lower optim.batch_size"
            )
        per_rank = check_divisible(self.batch_size, dist.world_size)
        self.sampler = ResumableSampler(
            len(dataset),
            seed=config.seed,
            shuffle=True,
            rank=dist.rank,
            world_size=dist.world_size,
            batch_size=self.batch_size,
        )
        self.loader = DataLoader(
            dataset,
            batch_size=per_rank,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            drop_last=True,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.data = config.data
        self.total_batches = config.optim.max_steps * config.optim.grad_accum
        self.epoch = 0
        self.consumed = 0  # batches of this epoch already handed to the loop
        self._iterator: Any = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.consumed * self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at a saved place: global samples of the epoch ("consumed" batches in
        checkpoints written before data parallelism, with the same batch size)."""
        position = state.get("position", int(state.get("consumed", 0)) * self.batch_size)
        if position % self.batch_size:
            raise ConfigError(
                f"the checkpoint stopped {position} samples into an epoch, which is not a whole "
                f"number of batches of optim.batch_size={self.batch_size}; resume with the "
                "batch size the run was trained with"
            )
        self.epoch, self.consumed = int(state["epoch"]), int(position) // self.batch_size
        self._iterator = None

    def _start_epoch(self) -> None:
        self.dataset.set_epoch(self.epoch)
        # Per epoch, from the epoch alone: a resumed run trains at the same sizes.
        size = train_image_size(self.epoch * self.batches_per_epoch / self.total_batches, self.data)
        self.dataset.image_size = size
        self.sampler.load_state_dict(
            {"epoch": self.epoch, "position": self.consumed * self.batch_size}
        )
        self._iterator = iter(self.loader)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._start_epoch()
        if self.consumed >= self.batches_per_epoch:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._start_epoch()
        batch = next(self._iterator)
        self.consumed += 1
        return batch
