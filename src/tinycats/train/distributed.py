"""Data parallelism with torch.distributed: who this process is, and the few collectives the loop needs.

A run is data-parallel when it starts with WORLD_SIZE > 1 in its environment: under
`torchrun`, `tinycats train --nproc N` (torch's elastic launcher, launch.py) or a
multi-GPU cloud container. Gradients go through DistributedDataParallel (NCCL on CUDA,
gloo on the CPU); everything else the loop agrees on is small and goes through a gloo
group on the CPU, so asking "does any rank want to stop?" every step never waits for
the GPU.

What keeps a data-parallel run the same run whatever the number of ranks:
- `optim.batch_size` is the global micro-batch: each rank takes its contiguous share of
  every global batch of the one shuffled order (data/sampler.py), so the samples of a
  step, the data position in a checkpoint and the lr schedule do not depend on N;
- each rank's random draws of step s (MixUp, DiT noise and times, dropout) come from a
  generator seeded by (seed, rank, s): no per-rank RNG state needs saving, and a resumed
  run draws what the uninterrupted one drew;
- batch-norm statistics are rank 0's (DDP broadcasts its buffers at every forward), so
  what rank 0 saves is what every rank evaluated with.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tinycats.errors import ConfigError, TinycatsError
from tinycats.storage import CheckpointManager, LoadedCheckpoint
from tinycats.storage.checkpoint import load_checkpoint
from tinycats.train.device import select_device

COLLECTIVE_TIMEOUT = timedelta(minutes=10)
"""How long a rank waits in a collective before it gives up: the bound on a hang when a
peer is stuck (a peer that dies is seen at once: its sockets close, and the launcher
stops the others). Long enough for rank 0 to prepare a dataset while the others wait."""

T = TypeVar("T")


class DataParallel(DistributedDataParallel):
    """DDP that still answers the wrapped model's attributes (`model.null_class`,
    `model.prediction`), so a task's loss takes either (fairseq's ModuleProxyWrapper)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; a single process is rank 0 of 1 and every method
    is then a no-op that returns its input."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    control: Any = None  # a gloo process group for CPU-side agreement

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        """This rank's GPU (by its local rank) under CUDA; else the CPU (gloo has no MPS)."""
        if not self.enabled:
            return select_device()
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loss runs: DDP over the model when there are several ranks."""
        if not self.enabled:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return DataParallel(model, device_ids=ids, forward_sync_buffers=True)

    def seed_step(self, seed: int, step: int) -> None:
        """Seed python, numpy and torch for this rank's draws of `step` (data-parallel only:
        a single process keeps its one saved stream, as before)."""
        if not self.enabled:
            return
        words = np.random.SeedSequence([seed, self.rank, step]).generate_state(2, dtype=np.uint32)
        value = int(words[0]) << 32 | int(words[1])
        random.seed(value)
        np.random.seed(int(words[0]))
        torch.manual_seed(value)

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any: the collective a stop agrees with."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return bool(value.item())

    def mean(
        self, loss: torch.Tensor, extras: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A step's loss and metrics, averaged over the ranks in one all-reduce on this
        rank's device (no host sync: the values are read only when logged)."""
        if not self.enabled:
            return loss, extras
        values = torch.stack([loss, *extras.values()]).detach()  # (1 + len(extras),)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)  # gloo has no AVG
        values = values / self.world_size
        return values[0], dict(zip(extras, values[1:], strict=True))

    def shard(self, n: int) -> range:
        """This rank's contiguous share of n items (evaluation): rank r gets the r-th slice."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def weighted_mean(self, metrics: dict[str, float], count: int) -> dict[str, float]:
        """Per-sample means computed on each rank's shard, combined into the whole split's."""
        if not self.enabled:
            return metrics
        shards = self.all_gather_json({"metrics": metrics, "count": count})
        total = sum(s["count"] for s in shards if s["metrics"])
        if total == 0:
            return {}
        keys = next(s["metrics"] for s in shards if s["metrics"]).keys()
        return {
            key: sum(s["metrics"][key] * s["count"] for s in shards if s["metrics"]) / total
            for key in keys
        }

    def same_checkpoint(self, manager: CheckpointManager) -> LoadedCheckpoint | None:
        """The run's checkpoint to resume from, the same on every rank: rank 0 picks it
        (`latest.json`'s, else the newest that verifies) and the others load that folder,
        named relative to the store's root (another host mounts the volume elsewhere, and
        reloads it when its view predates rank 0's pick)."""
        root = manager.store.root
        loaded = self.on_main(manager.load_latest)
        chosen = self.broadcast_json(
            None if loaded is None else str(Path(loaded.info.path).relative_to(root))
        )
        if self.is_main or chosen is None:
            return loaded
        if not (root / chosen).is_dir():
            manager.store.reload()
        return load_checkpoint(root / chosen)

    def sync_buffers(self, *modules: nn.Module) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics) before they are used."""
        if not self.enabled:
            return
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def broadcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able value on every rank (no pickles cross between processes)."""
        if not self.enabled:
            return value
        data = json.dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64)
        dist.broadcast(size, src=0, group=self.control)
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.is_main:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buffer, src=0, group=self.control)
        return json.loads(bytes(buffer.tolist()).decode())

    def all_gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-able value, in rank order."""
        if not self.enabled:
            return [value]
        data = json.dumps(value).encode()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64), group=self.control)
        longest = max(int(s.item()) for s in sizes)
        mine = torch.zeros(longest, dtype=torch.uint8)
        mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        gathered = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine, group=self.control)
        return [
            json.loads(bytes(g[: int(s.item())].tolist()).decode())
            for g, s in zip(gathered, sizes, strict=True)
        ]

    def main_first(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0, then on the others (a dataset is prepared once, then only
        opened)."""
        result = self.on_main(work)
        return result if self.is_main else work()  # type: ignore[return-value]

    def on_main(self, work: Callable[[], T]) -> T | None:
        """Run `work` on rank 0 only (None elsewhere). A user error there is raised on every
        rank, so none waits for rank 0 forever."""
        if not self.enabled:
            return work()
        if not self.is_main:
            failure = self.broadcast_json(None)
            if failure:
                raise error_class(failure["type"])(failure["error"])
            return None
        try:
            result = work()
        except TinycatsError as err:
            self.broadcast_json({"error": str(err), "type": type(err).__name__})
            raise
        self.broadcast_json({})
        return result


def error_class(name: str) -> type[TinycatsError]:
    """The package's user-error type called `name` (TinycatsError if unknown): how a user
    error crosses from one process to another as a value."""
    from tinycats import errors

    found = getattr(errors, name, None)
    return found if isinstance(found, type) and issubclass(found, TinycatsError) else TinycatsError


def check_divisible(batch_size: int, world_size: int) -> int:
    """The per-rank micro-batch of a global `batch_size`, or a one-line error naming the fix."""
    if batch_size % world_size:
        raise ConfigError(
            f"optim.batch_size={batch_size} does not split over {world_size} ranks; "
            f"choose a batch size divisible by {world_size} or another number of processes"
        )
    return batch_size // world_size


@contextmanager
def distributed_from_env() -> Iterator[Distributed]:
    """Join the job the environment describes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT); a single process when WORLD_SIZE is absent or 1. The process group
    is torn down on a normal exit only: after a failure a peer may be gone, and the
    process is about to end anyway."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield Distributed()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    control = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if cuda else None
    yield Distributed(rank, world_size, local_rank, control)
    dist.destroy_process_group()
