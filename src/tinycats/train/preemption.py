"""Turn SIGTERM, SIGINT and cloud cancellation into a checkpoint at the next step boundary.

Why not stop at once: a step interrupted half-way leaves the optimizer and the model
out of step with each other. The guard only raises a flag; the loop checks it after
each optimizer step, writes a checkpoint, commits and returns. A second Ctrl-C is
an explicit "now": it raises KeyboardInterrupt, and the last committed checkpoint
stays valid because checkpoints are only ever published by an atomic rename.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tinycats.config import TrainConfig

STOP_MARGIN_S = 5.0
"""Of Modal's grace period, what the stop leaves for the rest: the exit commit, the exit."""


def stop_budget_seconds(config: TrainConfig) -> float:
    """What a stop may take, from the signal to a committed checkpoint: Modal's grace
    (`modal.preemption_grace_s`, SIGINT to SIGKILL) less a margin. The same bound holds
    locally (tests/test_stop_on_time.py), where nothing kills a slow stop."""
    return max(1.0, config.modal.preemption_grace_s - STOP_MARGIN_S)


class PreemptionGuard:
    """Context manager: installs signal handlers (main thread only) and exposes `requested`.

    Cloud code that learns of a cancellation by other means calls `request(reason)`.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)):
        self._signals = signals
        self._event = threading.Event()
        self.reason: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        """Ask the loop to checkpoint and stop at the next step boundary."""
        if self.reason is None:
            self.reason = reason
        self._event.set()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt(f"second {name}: stopping without a final checkpoint")
        self.request(name)

    def __enter__(self) -> PreemptionGuard:
        # Python only delivers signals to the main thread; elsewhere (a worker thread in a
        # cloud container) the caller forwards cancellation through request().
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
