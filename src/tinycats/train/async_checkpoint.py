"""Write checkpoints off the training thread.

The loop pays only for a CPU snapshot of the tensors (a copy: the optimizer updates
its moments in place, so the live tensors cannot be written later), into staging
buffers reused across checkpoints. The write,
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


def snapshot(obj: T, buffers: dict[tuple, torch.Tensor] | None = None, key: tuple = ()) -> T:
    """Copy of nested dicts/lists/tuples with every tensor copied to contiguous CPU memory.

    With `buffers`, a tensor is copied into the buffer kept from the previous snapshot at
    the same place (same shape and dtype) instead of fresh memory: page-faulting in
    ~180 MB of new pages costs as much as the copy itself.
    """
    if isinstance(obj, torch.Tensor):
        source = obj.detach()
        if buffers is None:
            return source.to("cpu", copy=True).contiguous()  # type: ignore[return-value]
        buffer = buffers.get(key)
        if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
            buffer = buffers[key] = torch.empty(source.shape, dtype=source.dtype)
        buffer.copy_(source)
        return buffer  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {k: snapshot(v, buffers, (*key, k)) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, list):
        return [snapshot(v, buffers, (*key, i)) for i, v in enumerate(obj)]  # type: ignore[return-value]
    if isinstance(obj, tuple):
        return tuple(snapshot(v, buffers, (*key, i)) for i, v in enumerate(obj))  # type: ignore[return-value]
    return obj


class AsyncCheckpointer:
    """Runs `write(state)` on a single background thread, one save at a time."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckpt-writer")
        self._pending: Future[Any] | None = None
        self._buffers: dict[tuple, torch.Tensor] = {}

    def stage(self, obj: T) -> T:
        """Snapshot `obj` into staging buffers reused from one checkpoint to the next.

        Waits for the save in flight first: it is still reading the same buffers.
        """
        self.wait()
        return snapshot(obj, self._buffers)

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
