"""A multi-GPU container (`--gpu H100:4`): one rank per GPU, this process their launcher.

Modal gives such a container several GPUs and runs the call in one Python process. That
process launches one rank per GPU with torch's elastic launcher (train/launch.py: NCCL
between the GPUs, the very same engine) and keeps what only it can do:

- the Modal client: volume commits. Rank 0 writes checkpoints to the mounted volume as
  any process can, and asks this process to commit through a `CommitRelay`;
- the run's lease: the relayed commits go through the lease-fenced store, so a container
  that lost its run publishes nothing, with or without ranks;
- Modal's signals (preemption SIGINT, cancellation SIGUSR1, both sent to this process
  only) and the slice's deadline: its guard is polled by the launcher, which passes a
  stop on to every rank; the ranks agree on the step and rank 0 writes one checkpoint.

A rank that dies fails the launch (the launcher stops the others), the call fails as
any call does, and its retry resumes from the last committed checkpoint.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tinycats import errors
from tinycats.storage import Store

RELAY_TIMEOUT_S = 600.0
"""The longest a relayed commit may take (a busy volume is retried by the store itself)."""


@dataclass
class RelayedStore:
    """Rank 0's view of the outputs Store: the same files; commits done by the launcher."""

    root: Path
    requests: Any
    replies: Any

    def commit(self) -> None:
        self._ask("commit")

    def reload(self) -> None:
        self._ask("reload")

    def _ask(self, operation: str) -> None:
        self.requests.put(operation)
        failure = self.replies.get(timeout=RELAY_TIMEOUT_S)
        if failure is not None:
            name, message = failure
            raise error_classes().get(name, RuntimeError)(message)


def error_classes() -> dict[str, type[Exception]]:
    """Every TinycatsError subclass by name, wherever it is defined (LeaseLost lives in
    storage/run_lock.py), so a rank re-raises the launcher's error as its own class."""
    found: dict[str, type[Exception]] = {}
    pending: list[type[Exception]] = [errors.TinycatsError]
    while pending:
        kind = pending.pop()
        found[kind.__name__] = kind
        pending.extend(kind.__subclasses__())
    return found


class CommitRelay:
    """Context manager: serves a RelayedStore's commits and reloads on `store` from a thread
    of this process, for as long as the ranks run. Errors go back to the rank (a lost lease
    stays a LeaseLost there)."""

    def __init__(self, store: Store) -> None:
        context = multiprocessing.get_context("spawn")
        self.store, self.requests, self.replies = store, context.Queue(), context.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="commit-relay")

    def __enter__(self) -> RelayedStore:
        self._thread.start()
        return RelayedStore(self.store.root, self.requests, self.replies)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                operation = self.requests.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                getattr(self.store, operation)()
            except Exception as err:  # the rank raises it; this thread serves on
                self.replies.put((type(err).__name__, str(err)))
            else:
                self.replies.put(None)
