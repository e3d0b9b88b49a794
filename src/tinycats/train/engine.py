"""The training engine: one loop for every task, stoppable at any step, resumable exactly.

`run_training` is plain Python (no cloud in sight): the CLI calls it locally, the
Modal class calls the very same function in a container. Resume is by convention:
if the run already has a committed checkpoint, training continues from it.

What makes resume bitwise exact on CPU:
- the data order and augmentations depend only on (seed, epoch, index), and the
  sampler restarts at the number of samples already consumed in the epoch;
- the learning rate is a pure function of the step;
- model, EMA (and its update count), optimizer, grad scaler and every RNG are saved;
- evaluation and previews use private generators, so an extra checkpoint (e.g. at
  preemption) does not perturb the training trajectory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tinycats.config import TrainConfig
from tinycats.data import ResumableSampler, ShardDataset, prepare_dataset, resolve_data_root
from tinycats.errors import CheckpointError, ConfigError
from tinycats.models import config_of_resumed_run, model_from_args
from tinycats.models.ema import EMA
from tinycats.storage import CheckpointManager, LoadedCheckpoint, RunRegistry, Store
from tinycats.train.async_checkpoint import AsyncCheckpointer
from tinycats.train.preemption import PreemptionGuard
from tinycats.train.progress import TrainProgress
from tinycats.train.schedule import learning_rate, train_image_size
from tinycats.train.state import capture_rng_state, restore_rng_state, seed_everything
from tinycats.train.tasks import Task, make_task

TRAIN_STATE_VERSION = 1

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or preempted) call of `run_training` reports."""

    run_id: str
    task: str
    status: str  # completed | preempted
    step: int
    max_steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    resumed_from: int | None = None
    elapsed_seconds: float = 0.0


def select_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16), where oneDNN's
    bf16 convolutions are fast; elsewhere they are emulated and slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training forward pass, or None for plain fp32.

    CUDA: bf16 where supported, else fp16 (with a grad scaler). CPU: only an explicit
    `bf16`; `auto` stays fp32 there, so the default run means the same on every CPU, and
    bf16 pays only on CPUs with bf16 units (ResNet-18 training 2.1-2.4x faster on two
    Sapphire Rapids cores: benchmarks/amp_throughput.py).
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu" and amp == "bf16":
        if not cpu_has_native_bf16():
            log.warning(
                "optim.amp=bf16 on a CPU without AMX/AVX512-BF16 is emulated, several times "
                "slower than fp32; set optim.amp=off on this machine (the classifier "
                "recipe for it: configs/classifier-cpu-fp32.toml)"
            )
        return torch.bfloat16
    if amp != "auto":
        log.info("optim.amp=%s has no effect on %s; training in fp32", amp, device.type)
    return None


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (often the better generaliser for CNNs
    trained from scratch); no weight decay on biases and norm weights (1-D tensors)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optim = config.optim
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # One fused kernel per step instead of a Python loop over ~60 tensors: the
    # for-loop AdamW took 42 ms of a ResNet-18 step on two CPU cores, the fused one 20.
    fused = {"fused": True} if _device_of(model).type in ("cpu", "cuda") else {}
    if optim.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=optim.lr, momentum=optim.beta1, nesterov=optim.beta1 > 0, **fused
        )
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), **fused)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load saved optimizer state, with each moment laid out in memory like its parameter.

    Checkpoints store contiguous tensors, but a channels-last conv weight has
    channels-last moments while training. The fused kernels walk parameter, gradient
    and moments as flat memory, so a moment in another layout would silently pair the
    wrong elements; the for-loop optimizers only hid it by indexing per element.
    """
    optimizer.load_state_dict(state)
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                param_state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


class EpochBatches:
    """An endless stream of batches that knows its place: (epoch, batches consumed).

    The loader gets its own generator so creating an iterator never draws from the
    global torch RNG (it would on resume and not otherwise, breaking exactness).
    """

    def __init__(self, dataset: ShardDataset, config: TrainConfig, device: torch.device):
        self.dataset = dataset
        self.batch_size = config.optim.batch_size
        if len(dataset) < self.batch_size:
            raise ConfigError(
                f"optim.batch_size={self.batch_size} is larger than the training split "
                f"({len(dataset)} images); lower optim.batch_size"
            )
        self.sampler = ResumableSampler(len(dataset), seed=config.seed, shuffle=True)
        self.loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
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
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
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


class Trainer:
    """One run: built from a config, optionally restored from a checkpoint, then `fit()`."""

    def __init__(
        self,
        config: TrainConfig,
        store: Store,
        run_id: str,
        *,
        guard: PreemptionGuard | None = None,
        progress: bool | None = None,
        device: torch.device | None = None,
    ):
        self.config = config
        self.store = store
        self.run_id = run_id
        self.guard = guard or PreemptionGuard(signals=())
        self.device = device or select_device()
        self.task: Task = make_task(config)
        self.registry = RunRegistry(store)
        self.checkpoints = CheckpointManager.from_config(store, config.task, run_id, config)
        self.writer = AsyncCheckpointer(enabled=config.checkpoint.async_save)
        self.progress_enabled = progress

        prepared = prepare_dataset(config.data, resolve_data_root(config.data, store.root))
        breeds = config.data.breeds or None
        size = config.data.image_size
        augment = config.data.augment
        self.train_set = ShardDataset(
            prepared, "train", size, train=True, augment=augment, seed=config.seed, breeds=breeds
        )
        self.val_set = ShardDataset(
            prepared,
            "val",
            config.eval_image_size,
            train=False,
            breeds=breeds,
            eval_crop=config.eval_crop,
        )
        self.classes = list(self.train_set.classes)
        self.batches = EpochBatches(self.train_set, config, self.device)
        self.val_loader = DataLoader(
            self.val_set,
            batch_size=max(config.optim.batch_size, 64),
            shuffle=False,
            num_workers=config.data.num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )

        self.step = 0
        self.resumed_from: int | None = None
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            seed_everything(config.seed)  # before the model: its init is part of the run
            self.model, self.model_args = self.task.build_model(config, len(self.classes))
        else:
            self.model_args = loaded.meta["model_args"]
            self.model = model_from_args(config.task, self.model_args)
            self.config = config = config_of_resumed_run(config, self.model_args)
        self.model.to(self.device)
        self.ema = EMA(self.model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
        self.optimizer = build_optimizer(self.model, config)
        self.amp_dtype = autocast_dtype(config.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if loaded is not None:
            self._restore(loaded)

    # ---- checkpoint state -------------------------------------------------------------

    def _restore(self, loaded: LoadedCheckpoint) -> None:
        if loaded.meta.get("classes") != self.classes:
            raise CheckpointError(
                f"checkpoint {loaded.info.path} was trained on classes {loaded.meta.get('classes')}, "
                f"but the data now has {self.classes}; use the same data config or a new --run-id"
            )
        state = loaded.train_state
        self.model.load_state_dict(loaded.weights["model"])
        if self.ema is not None and "ema" in loaded.weights:
            self.ema.load_state_dict(loaded.weights["ema"], num_updates=state["ema_updates"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["data"])
        self.step = int(state["step"])
        self.resumed_from = self.step
        restore_rng_state(state["rng"])
        for path, reason in loaded.skipped:
            log.warning("skipped checkpoint %s: %s", path, reason)

    def _state_snapshot(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        """CPU copies of everything a resume needs, taken at a step boundary."""
        weights = {"model": self.model.state_dict()}
        if self.ema is not None:
            weights["ema"] = self.ema.state_dict()
        train_state = {
            "version": TRAIN_STATE_VERSION,
            "step": self.step,
            "data": self.batches.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema_updates": self.ema.num_updates if self.ema is not None else 0,
            "rng": capture_rng_state(),
        }
        staged = self.writer.stage({"weights": weights, "train_state": train_state})
        return staged["weights"], staged["train_state"]

    def _meta(self) -> dict[str, Any]:
        import tinycats

        return {
            "config": self.config.to_dict(),
            "model_args": self.model_args,
            "classes": self.classes,
            "versions": {"tinycats": tinycats.__version__, "torch": torch.__version__},
        }

    def eval_model(self) -> nn.Module:
        """The weights used for evaluation and previews: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, metrics: dict[str, float]) -> None:
        """Snapshot now (cheap), write + commit + prune in the background."""
        weights, train_state = self._state_snapshot()
        step, meta = self.step, self._meta()

        def write() -> None:
            info = self.checkpoints.save(step, weights, train_state, meta, metrics)
            best = self.checkpoints.best()
            self.registry.update(
                self.run_id,
                step=step,
                metrics=metrics,
                latest_checkpoint=str(info.path),
                best_checkpoint=str(best.path) if best else str(info.path),
            )

        self.writer.submit(write)
        preview = self.task.preview(
            self.eval_model(),
            self.classes,
            self.device,
            self.store.root / "samples" / self.run_id / f"step_{step:08d}.png",
        )
        if preview is not None:
            self.store.commit()

    def evaluate(self) -> dict[str, float]:
        return self.task.evaluate(self.eval_model(), self.val_loader, self.device)

    # ---- the loop ---------------------------------------------------------------------

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step over `grad_accum` micro-batches; returns detached loss/metrics."""
        optim = self.config.optim
        lr = learning_rate(self.step, optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for _ in range(optim.grad_accum):
            images, labels = self.batches.next()
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            autocast = (
                torch.autocast(self.device.type, dtype=self.amp_dtype)
                if self.amp_dtype is not None
                else contextlib.nullcontext()
            )
            with autocast:
                loss, extras = self.task.loss(self.model, images, labels)
            self.scaler.scale(loss / optim.grad_accum).backward()
            total += loss.detach() / optim.grad_accum
        if optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return total, extras

    def fit(self) -> TrainResult:
        config = self.config
        max_steps, every = config.optim.max_steps, config.checkpoint.every_steps
        eval_every = config.optim.eval_every or every
        self.registry.start(self.run_id, config.task, config.to_dict())
        self.model.train()
        started = time.perf_counter()
        metrics: dict[str, float] = {}
        status = "completed"
        reporter = TrainProgress(
            self.run_id,
            max_steps,
            self.step,
            config.optim.batch_size * config.optim.grad_accum,
            enabled=self.progress_enabled,
        )
        try:
            with reporter:
                while self.step < max_steps:
                    loss, extras = self.train_step()
                    reporter.update(
                        self.step,
                        loss,
                        extras,
                        self.optimizer.param_groups[0]["lr"],
                        self.train_set.image_size if config.data.progressive_min_size else None,
                    )
                    stop = self.guard.requested
                    at_end = self.step >= max_steps
                    if self.step % eval_every == 0 or at_end or stop:
                        metrics = {**metrics, **self.evaluate()}
                        reporter.log_metrics(self.step, metrics)
                    if self.step % every == 0 or at_end or stop:
                        self.checkpoint(metrics)
                    if stop and not at_end:
                        status = "preempted"
                        break
            self.writer.wait()
        except BaseException as err:
            # Whatever was committed stays; the record says how the run ended. A second
            # Ctrl-C is an interruption the user can resume from, not a failure.
            status = "preempted" if isinstance(err, KeyboardInterrupt) else "failed"
            with contextlib.suppress(Exception):
                self.writer.close()
            with contextlib.suppress(Exception):
                self.registry.finish(self.run_id, status, step=self.step, error=repr(err)[:500])
                self.store.commit()
            raise
        self.writer.close()
        latest = self.checkpoints.latest()
        best = self.checkpoints.best()
        self.registry.finish(
            self.run_id,
            status,
            step=self.step,
            metrics=metrics,
            preempted_by=self.guard.reason if status == "preempted" else None,
            best_checkpoint=str(best.path) if best else None,
        )
        self.store.commit()  # the final record too: another container may read it next
        return TrainResult(
            run_id=self.run_id,
            task=config.task,
            status=status,
            step=self.step,
            max_steps=max_steps,
            metrics=metrics,
            checkpoint=str(latest.path) if latest else None,
            resumed_from=self.resumed_from,
            elapsed_seconds=round(time.perf_counter() - started, 3),
        )


def run_training(
    config: TrainConfig,
    store: Store,
    run_id: str,
    *,
    guard: PreemptionGuard | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train `run_id` to `config.optim.max_steps`, continuing from its last committed checkpoint.

    With `guard` requested (SIGTERM, Ctrl-C, cloud cancellation) the loop writes a
    checkpoint at the next step boundary, commits it and returns status "preempted".
    """
    return Trainer(config, store, run_id, guard=guard, progress=progress).fit()
