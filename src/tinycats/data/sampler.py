"""A sampler whose place inside an epoch can be saved and restored, for exact resume.

The epoch's order is a permutation that depends only on (seed, epoch). Its position
counts what the training loop has CONSUMED, not what `__iter__` has yielded: a
DataLoader prefetches several batches ahead, so "yielded" runs ahead of the step that
is being checkpointed. The engine calls `mark_consumed(batch_size)` after each batch it
trained on (or `load_state_dict` with position = batches_consumed × batch_size), and a
checkpoint's `state_dict()` then names exactly the samples still to come.

Data parallelism shards this one order rather than making one per rank: with
`world_size` ranks and a global `batch_size`, each global batch of the order is cut into
`world_size` contiguous slices and rank r takes slice r. The position stays the GLOBAL
count of samples consumed, so a checkpoint means the same place for any number of
ranks, and a run resumed with another number continues from the very next sample.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Shuffled (or sequential) indices 0..num_samples-1, resumable mid-epoch.

    `__iter__` yields the current epoch's permutation from `position` onwards; it does
    not move `position` itself (see the module docstring). `set_epoch(e)` with a new
    epoch starts it at position 0; with the current epoch (e.g. right after
    `load_state_dict`) it keeps the restored position.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
    ) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if not 0 <= rank < world_size or batch_size % world_size:
            raise ValueError(
                f"rank {rank} of {world_size} cannot take a share of a batch of {batch_size}"
            )
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.epoch, self.position = 0, 0
        self._start = 0  # position when the current __iter__ began (for __len__)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The full order of `epoch`: a function of (seed, epoch) only."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        # Two entropy words, where per-sample augmentation seeds use three: distinct streams.
        state = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint32)
        gen = torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))
        return torch.randperm(self.num_samples, generator=gen)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.position, self._start = epoch, 0, 0

    def mark_consumed(self, n: int) -> None:
        """Record that the training loop has used n more samples of this epoch."""
        if n < 0 or self.position + n > self.num_samples:
            raise ValueError(
                f"mark_consumed({n}) at position {self.position} exceeds the epoch's {self.num_samples} samples"
            )
        self.position += n

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at `state["position"]` of `state["epoch"]`'s permutation on the next __iter__."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"position {position} is outside 0..{self.num_samples}")
        self.epoch, self.position, self._start = epoch, position, position

    def __iter__(self) -> Iterator[int]:
        self._start = self.position  # set now, not at the first next(), so len() agrees
        return iter(self._share(self.permutation(self.epoch)[self._start :]).tolist())

    def _share(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's slice of each whole global batch of `order` (all of it for one rank)."""
        if self.world_size == 1:
            return order
        per_rank = self.batch_size // self.world_size
        batches = len(order) // self.batch_size  # a partial last batch is dropped, as drop_last
        grid = order[: batches * self.batch_size].view(batches, self.world_size, per_rank)
        return grid[:, self.rank].reshape(-1)  # (batches * per_rank,)

    def __len__(self) -> int:
        """Indices the current (or next) iteration yields: this rank's share of the rest."""
        rest = self.num_samples - self._start
        if self.world_size == 1:
            return rest
        return rest // self.batch_size * (self.batch_size // self.world_size)
