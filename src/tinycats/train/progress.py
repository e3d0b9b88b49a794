"""Training progress: a rich bar on a terminal, plain log lines elsewhere (CI, Modal logs).

Reading a loss value forces a device sync, so values are read only when shown
(every `refresh_every` steps), not on every step.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Context manager fed by the loop with `update(step, loss, extras, lr)`."""

    def __init__(
        self,
        run_id: str,
        max_steps: int,
        start_step: int,
        images_per_step: int,
        *,
        enabled: bool | None = None,
        console: Console | None = None,
    ):
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal if enabled is None else enabled
        self.run_id = run_id
        self.max_steps = max_steps
        self.images_per_step = images_per_step
        self.refresh_every = 5 if self.interactive else max(1, max_steps // 10)
        self._last_step = start_step
        self._last_time = time.perf_counter()
        self._progress: Progress | None = None
        self._task_id = None
        self._start_step = start_step

    def __enter__(self) -> TrainProgress:
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
            self._task_id = self._progress.add_task(
                self.run_id, total=self.max_steps, completed=self._start_step, stats=""
            )
        elif self._start_step:
            self.console.print(
                f"resuming {self.run_id} at step {self._start_step}", highlight=False
            )
        return self

    def update(
        self,
        step: int,
        loss: torch.Tensor,
        extras: dict[str, torch.Tensor],
        lr: float,
        image_size: int | None = None,
    ) -> None:
        """Show the step's numbers; `image_size` when it changes during the run
        (progressive resizing), since img/s and the ETA follow it."""
        if step % self.refresh_every and step != self.max_steps:
            return
        now = time.perf_counter()
        rate = (step - self._last_step) * self.images_per_step / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        parts = [f"loss {loss.item():.4f}"]
        parts += [f"{name} {value.item():.3f}" for name, value in extras.items()]
        parts += [f"lr {lr:.2e}", f"{rate:.0f} img/s"]
        if image_size is not None:
            parts.append(f"{image_size} px")
        stats = "  ".join(parts)
        if self._progress is not None:
            self._progress.update(self._task_id, completed=step, stats=stats)
        else:
            self.console.print(f"step {step}/{self.max_steps}  {stats}", highlight=False)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        text = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        if text:
            self.console.print(f"step {step}: {text}", highlight=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
        sys.stderr.flush()
