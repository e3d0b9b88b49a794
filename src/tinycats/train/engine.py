"""The training engine: one loop for every task, stoppable at any step, resumable exactly.

Read top to bottom: the Trainer is handed its data, its model and (when resuming)
its last checkpoint, and `fit()` is the loop; what a step, an evaluation and a
checkpoint do follows. The I/O that prepares a Trainer (data, checkpoint, pretrained
weights) is run.py's `build_trainer`, and `run_training` there is the whole run. It is
plain Python (no cloud in sight): the CLI calls it locally, the Modal class calls the
very same function in a container. Resume is by convention: if the run already has a
committed checkpoint, training continues from it.

What makes resume bitwise exact on CPU:
- the data order and augmentations depend only on (seed, epoch, index), and the
  sampler restarts at the number of samples already consumed in the epoch;
- the learning rate is a pure function of the step;
- model, EMA (and its update count), optimizer, grad scaler and every RNG are saved;
- evaluation and previews use private generators, so an extra checkpoint (e.g. at
  preemption) does not perturb the training trajectory.

Data-parallel (distributed.py): every rank runs this loop on its share of each batch,
DDP averages the gradients, and rank 0 alone writes checkpoints, run records and
commits; a stop is agreed on by all ranks at the same step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from torch import nn

from tinycats.config import TrainConfig
from tinycats.errors import CheckpointError
from tinycats.models.ema import EMA
from tinycats.storage import CheckpointManager, LoadedCheckpoint, RunRegistry, Store
from tinycats.storage.layout import step_dir_name
from tinycats.storage.metrics_log import METRICS_FILE, MetricsLog
from tinycats.train.async_checkpoint import AsyncCheckpointer
from tinycats.train.batches import EpochBatches, TrainingData, validation_loader
from tinycats.train.device import autocast, autocast_dtype
from tinycats.train.distributed import Distributed
from tinycats.train.metrics import MetricsRecorder, total_grad_norm
from tinycats.train.optimizer import build_optimizer, load_optimizer_state
from tinycats.train.preemption import PreemptionGuard
from tinycats.train.progress import TrainProgress
from tinycats.train.schedule import learning_rate
from tinycats.train.state import capture_rng_state, restore_rng_state
from tinycats.train.task import make_task
from tinycats.train.tracking import make_sinks

if TYPE_CHECKING:
    from tinycats.train.run import RunModel

TRAIN_STATE_VERSION = 1
PEER_STOP = "a stop requested on another rank"
"""A run's `preempted_by` when rank 0 stopped because another rank asked (agreed on)."""

log = logging.getLogger(__name__)


class Trainer:
    """One run: its model, optimizer and data, continued from `resume` when given; then `fit()`.

    The constructor does no I/O: `build_trainer` (run.py) prepares the data, builds the
    model (fresh, or from the checkpoint's `model_args`) and loads the checkpoint it is
    handed.
    """

    def __init__(
        self,
        config: TrainConfig,
        store: Store,
        run_id: str,
        data: TrainingData,
        model: RunModel,
        *,
        resume: LoadedCheckpoint | None = None,
        guard: PreemptionGuard | None = None,
        progress: bool | None = None,
        device: torch.device | None = None,
        dist: Distributed | None = None,
    ):
        self.config, self.store, self.run_id = config, store, run_id
        self.guard = guard or PreemptionGuard(signals=())
        self.progress_enabled = progress
        self.dist = dist or Distributed()
        self.device = device or self.dist.device()
        self.task = make_task(config)
        self.registry = RunRegistry(store)
        self.checkpoints = CheckpointManager.from_config(store, config.task, run_id, config)
        self.writer = AsyncCheckpointer(enabled=config.checkpoint.async_save)

        self.train_set, self.val_set, self.classes = data.train_set, data.val_set, data.classes
        self.batches = EpochBatches(self.train_set, config, self.device, self.dist)
        self.val_shard = self.dist.shard(len(self.val_set))
        self.val_loader = validation_loader(self.val_set, config, self.val_shard)

        self.model, self.model_args = model.module.to(self.device), model.args
        self.net = self.dist.wrap(self.model, self.device)  # what the loss runs (DDP or the model)
        self.ema = EMA(self.model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None
        self.optimizer = build_optimizer(self.model, config)
        self.amp_dtype = autocast_dtype(config.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.resumed_from: int | None = None
        self.grad_norm: torch.Tensor | None = None
        if resume is not None:
            self._restore(resume)
        checkpoints = self.checkpoints  # not `self`: a cycle would keep the shards mapped
        self.metrics = MetricsRecorder(
            lambda: MetricsLog(checkpoints.run_dir / METRICS_FILE),
            config.tracking.log_every,
            config.optim.max_steps,
            config.optim.batch_size * config.optim.grad_accum,
            make_sinks(config, store, run_id) if self.dist.is_main else [],  # rank 0 tracks
        )

    # ---- the loop ---------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train to `optim.max_steps`, evaluating and checkpointing on schedule.

        A stop request (SIGTERM, Ctrl-C, Modal's preemption or cancellation, the end of a
        cloud slice) is answered at the next step boundary with one checkpoint and its
        commit, and nothing else: no evaluation and no preview grid, whose time Modal's
        grace period (`modal.preemption_grace_s`) does not have. Returns "preempted".
        """
        config, optim = self.config, self.config.optim
        every = config.checkpoint.every_steps
        eval_every = optim.eval_every or every
        if self.dist.is_main:
            self.registry.start(self.run_id, config.task, config.to_dict())
            self.metrics.resume(self.step)  # lines past the resumed checkpoint are redone
        self.model.train()
        started = time.perf_counter()
        metrics: dict[str, float] = {}
        status = "completed"
        reporter = TrainProgress(
            self.run_id,
            optim.max_steps,
            self.step,
            optim.batch_size * optim.grad_accum,
            enabled=self.progress_enabled if self.dist.is_main else False,
            console=None if self.dist.is_main else Console(stderr=True, quiet=True),
        )
        try:
            with reporter:
                while self.step < optim.max_steps:
                    with self.metrics.timed("step_ms"):
                        loss, extras = self.train_step()
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.metrics.step(self.step, loss, lr, self.grad_norm)
                    reporter.update(
                        self.step,
                        loss,
                        extras,
                        lr,
                        self.train_set.image_size if config.data.progressive_min_size else None,
                    )
                    last = self.step >= optim.max_steps
                    # Every rank must stop at the same step: agree (a collective).
                    stopping = self.dist.any(self.guard.requested) and not last
                    if (self.step % eval_every == 0 or last) and not stopping:
                        with self.metrics.timed("eval_ms"):
                            evaluated = self.evaluate()
                        self.metrics.evaluation(self.step, evaluated)
                        metrics = {**metrics, **evaluated}
                        reporter.log_metrics(self.step, metrics)
                    if stopping:  # unevaluated: it must not compete for "best"
                        self.checkpoint({}, preview=False)
                        status = "preempted"
                        break
                    if self.step % every == 0 or last:
                        with self.metrics.timed("checkpoint_ms"):
                            self.checkpoint(metrics)
            self.writer.wait()
        except BaseException as err:
            self._record_failure(err)
            raise
        return self._finish(status, metrics, time.perf_counter() - started)

    def train_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step over `grad_accum` micro-batches; returns detached loss/metrics."""
        optim = self.config.optim
        lr = learning_rate(self.step, optim)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.dist.seed_step(self.config.seed, self.step)
        total = torch.zeros((), device=self.device)
        for micro in range(optim.grad_accum):
            with self.metrics.timed("data_ms"):
                images, labels = self.batches.next()
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
            # DDP all-reduces on the last micro-batch's backward only.
            last = micro == optim.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.net.no_sync()
            with sync:
                with autocast(self.device, self.amp_dtype):
                    loss, extras = self.task.loss(self.net, images, labels)
                self.scaler.scale(loss / optim.grad_accum).backward()
            total += loss.detach() / optim.grad_accum
        self.grad_norm = None
        if optim.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), optim.clip_grad)
        elif self.metrics.due(self.step + 1):
            self.grad_norm = total_grad_norm(self.model, self.scaler)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return self.dist.mean(total, extras)  # over every rank's samples

    def evaluate(self) -> dict[str, float]:
        """Validation metrics; each rank evaluates its shard, combined by shard size."""
        self.dist.sync_buffers(self.eval_model())
        metrics = self.task.evaluate(self.eval_model(), self.val_loader, self.device)
        return self.dist.weighted_mean(metrics, len(self.val_shard))

    def eval_model(self) -> nn.Module:
        """The weights used for evaluation and previews: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, metrics: dict[str, float], *, preview: bool = True) -> None:
        """Snapshot now (cheap); write, prune, record and publish in the background.

        One commit publishes the checkpoint, its pruning, the run record and the preview
        grid, and only the writer commits while a save is in flight: on a Modal volume a
        commit reloads, and a reload is refused while the writer holds files open. The
        preview is drawn first, on this thread, so the writer's commit includes it.
        Rank 0 alone writes: every rank holds the same weights (and the others' metrics
        lines are rank 0's too, reduced).
        """
        if not self.dist.is_main:
            self.metrics.discard()
            return
        weights, train_state = self._state_snapshot()  # waits for the save in flight
        step, meta = self.step, self._meta()
        images: dict[str, Path] = {}
        if preview:
            grid = self.task.preview(
                self.eval_model(),
                self.classes,
                self.device,
                self.store.root / "samples" / self.run_id / f"step_{step:08d}.png",
            )
            images = {"preview": grid} if grid is not None else {}
        lines = self.metrics.flush(images)  # the save's commit publishes them

        def write() -> None:
            info = self.checkpoints.save(step, weights, train_state, meta, metrics, publish=False)
            best = self.checkpoints.best()
            self.registry.update(
                self.run_id,
                publish=False,
                step=step,
                metrics=metrics,
                latest_checkpoint=str(info.path),
                device=str(self.device),  # what the report's environment names
                best_checkpoint=str(best.path) if best else str(info.path),
            )
            self.store.commit()
            self.metrics.published(lines, images)

        self.writer.submit(write)

    # ---- how a run ends ---------------------------------------------------------------

    def _finish(self, status: str, metrics: dict[str, float], elapsed: float) -> TrainResult:
        self.writer.close()
        self.metrics.close(status)
        latest = self.checkpoints.latest()
        best = self.checkpoints.best()
        if self.dist.is_main:
            self.registry.finish(
                self.run_id,
                status,
                step=latest.step if latest else 0,
                metrics=metrics,
                preempted_by=(self.guard.reason or PEER_STOP) if status == "preempted" else None,
                best_checkpoint=str(best.path) if best else None,
            )
            self.store.commit()  # the final record too: another container may read it next
        return TrainResult(
            run_id=self.run_id,
            task=self.config.task,
            status=status,
            step=self.step,
            max_steps=self.config.optim.max_steps,
            metrics=metrics,
            checkpoint=str(latest.path) if latest else None,
            resumed_from=self.resumed_from,
            elapsed_seconds=round(elapsed, 3),
        )

    def _record_failure(self, err: BaseException) -> None:
        """Whatever was committed stays; the record says how the run ended and what was
        committed (`step` is the newest published checkpoint's, not the step the loop had
        reached: after a failed save those differ). A second Ctrl-C is an interruption
        the user can resume from, not a failure."""
        status = "preempted" if isinstance(err, KeyboardInterrupt) else "failed"
        with contextlib.suppress(Exception):
            self.writer.close()
        if not self.dist.is_main:
            return
        with contextlib.suppress(Exception):
            self.metrics.close(status)
        with contextlib.suppress(Exception):
            committed = self.checkpoints.latest_step()
            self.registry.finish(
                self.run_id,
                status,
                step=committed or 0,
                stopped_at_step=self.step,
                latest_checkpoint=str(self.checkpoints.run_dir / step_dir_name(committed))
                if committed is not None
                else None,
                error=repr(err)[:500],
            )
            self.store.commit()

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
