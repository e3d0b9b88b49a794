"""What the loop measures, turned into metrics-log lines (and handed to the trackers).

Every `tracking.log_every` steps (and at the last step) one `train` line: loss, lr,
gradient norm, img/s, and where the window's time went (data wait, step, checkpoint
stall), averaged over the steps since the previous line; after every evaluation one
`eval` line with its metrics. Lines wait in memory until the checkpoint that covers
them: `flush()` appends them to the run's log just before the save is submitted, so the
save's commit publishes them, and `resume(step)` cuts the log back to the resumed step
(see storage/metrics_log.py). Values are read from the device only on logged steps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from tinycats.storage.metrics_log import EVAL_KIND, TRAIN_KIND, MetricsLog


class Sink(Protocol):
    """A tracker fed the same lines as the log (train/tracking.py: TensorBoard, MLflow)."""

    def resume(self, step: int, lines: Sequence[dict[str, Any]]) -> None:
        """The run continues after `step`; `lines` is the log as cut back to it."""
        ...

    def write(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        """Lines (and pictures) about to be covered by a checkpoint: before its commit."""
        ...

    def published(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        """The same, once the checkpoint is committed (on the checkpoint writer's thread)."""
        ...

    def close(self, status: str) -> None:
        """The run's attempt ended: completed, preempted or failed."""
        ...


class MetricsRecorder:
    """Fed by the loop; `log` is called when a flush needs the log (the run's folder may
    only be known then)."""

    def __init__(
        self,
        log: Callable[[], MetricsLog],
        log_every: int,
        max_steps: int,
        images_per_step: int,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.log, self.log_every, self.max_steps = log, log_every, max_steps
        self.images_per_step = images_per_step
        self.sinks = list(sinks)
        self.pending: list[dict[str, Any]] = []
        self._seconds: dict[str, float] = {}
        self._steps = 0

    def due(self, step: int) -> bool:
        """Whether `step` gets a train line (so its values are worth a device sync)."""
        return step % self.log_every == 0 or step == self.max_steps

    def resume(self, step: int) -> None:
        """Cut the log back to `step`, the step training continues from (0: a fresh run)."""
        log = self.log()
        log.cut_after(step)
        if self.sinks:
            lines = log.read()
            for sink in self.sinks:
                sink.resume(step, lines)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's wall time to `name` (data_ms, step_ms, checkpoint_ms, eval_ms)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - began

    def step(
        self, step: int, loss: torch.Tensor, lr: float, grad_norm: torch.Tensor | None
    ) -> None:
        """One optimizer step is done; on a logged step, close the window into a line."""
        self._steps += 1
        if not self.due(step):
            return
        seconds, steps = self._seconds, self._steps
        step_s = seconds.get("step_ms", 0.0)
        line: dict[str, Any] = {
            "step": step,
            "kind": TRAIN_KIND,
            "loss": float(loss),
            "lr": lr,
            "img_per_s": round(steps * self.images_per_step / step_s, 2) if step_s else None,
            "step_ms": round(1000 * step_s / steps, 3),
            "data_ms": round(1000 * seconds.get("data_ms", 0.0) / steps, 3),
            "checkpoint_ms": round(1000 * seconds.get("checkpoint_ms", 0.0), 3),
            "steps": steps,
            "time": round(time.time(), 3),
        }
        if grad_norm is not None:
            line["grad_norm"] = float(grad_norm)
        self.pending.append(line)
        self._seconds = {}
        self._steps = 0

    def evaluation(self, step: int, metrics: dict[str, float]) -> None:
        """An evaluation at `step` (timed by `timed("eval_ms")` around it)."""
        eval_s = self._seconds.pop("eval_ms", 0.0)
        self.pending.append(
            {
                "step": step,
                "kind": EVAL_KIND,
                **{k: float(v) for k, v in metrics.items()},
                "eval_ms": round(1000 * eval_s, 3),
                "time": round(time.time(), 3),
            }
        )

    def flush(self, images: dict[str, Path] | None = None) -> list[dict[str, Any]]:
        """Append the pending lines to the log (durably) and hand them, with the
        checkpoint's pictures, to the trackers; called just before a checkpoint's save is
        submitted. Returns them, for `published`."""
        lines, self.pending = self.pending, []
        self.log().append(lines)
        for sink in self.sinks:
            sink.write(lines, images or {})
        return lines

    def discard(self) -> None:
        """Drop the pending lines: a data-parallel rank other than 0, whose lines rank 0
        writes (the loss is reduced over the ranks before it is recorded)."""
        self.pending = []

    def published(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        for sink in self.sinks:
            sink.published(lines, images)

    def close(self, status: str) -> None:
        for sink in self.sinks:
            sink.close(status)


def total_grad_norm(model: nn.Module, scaler: torch.amp.GradScaler) -> torch.Tensor:
    """The total L2 norm of the gradients, unscaled, without touching them (a logged step
    of a run that does not clip: clipping computes the same norm anyway)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return nn.utils.get_total_norm(grads) / scaler.get_scale()
