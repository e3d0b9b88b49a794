"""Write checkpoints off the training thread.

The loop pays only for a CPU snapshot of the tensors (a copy: the optimizer updates
its moments in place, so the live tensors cannot be written later). The write,
hashing, fsync, commit and pruning then run on one background thread. At most one
save is in flight: a new request first waits for the previous one, so saves land in
step order and memory holds at most one extra copy of the state. A failure in the
writer is re-raised in the loop at the next call, never swallowed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def snapshot(obj: T) -> T:
    """Deep copy of nested dicts/lists/tuples with every tensor cloned to contiguous CPU memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True).contiguous()  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]  # type: ignore[return-value]
    if isinstance(obj, tuple):
        return tuple(snapshot(v) for v in obj)  # type: ignore[return-value]
    return obj


class AsyncCheckpointer:
    """Runs `write(state)` on a single background thread, one save at a time."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-writer")
        self._pending: Future[Any] | None = None

    def submit(self, write: Callable[[], Any]) -> None:
        """Wait for the previous save (raising its error), then start `write` in the background.

        `write` must only touch data already snapshotted; when disabled it runs inline.
        """
        self.wait()
        if self.enabled:
            self._pending = self._executor.submit(write)
        else:
            write()

    def wait(self) -> Any:
        """Block until the save in flight (if any) is done; re-raise its error here."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def close(self) -> None:
        """Finish the save in flight and stop the writer thread."""
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
