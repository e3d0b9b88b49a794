"""One writer per run across containers: a lease with a heartbeat and an expiry.

Two containers must never train one run at once: an old container still in its grace
period while the platform restarts its input elsewhere, or a user relaunching a run
that is alive in a detached call. A file on the volume cannot arbitrate that (the
volume has no atomic create across containers, and concurrent writers of one file are
last-writer-wins: `_Volume` docstring), so the lease lives in a `modal.Dict`, whose
`put(key, value, skip_if_exists=True)` is an atomic create that says whether it won
(modal 1.6.4 dict.py `_Dict.put`, `DictUpdateRequest(if_not_exists=...)`). It is the
cloud implementation of `storage.run_lock.RunWriter` (acquire, fence, release), the
protocol the local lock file implements on one machine.

The protocol needs nothing else. Holders are generations `<run>#<n>`; the live lease
is the newest generation that is neither released nor expired. To take the run, a
container creates generation n+1 with `skip_if_exists=True`: of two racers exactly one
wins. A holder renews its entry every `ttl/3` (heartbeat) and checks that no n+1 exists
(which only appears after its entry expired). `fence()` is called before each commit
of the run's outputs, so a holder that lost its lease publishes nothing more.

A second writer of the same call (the platform's restart of an interrupted input)
waits for the old holder to release or expire; any other call refuses at once with a
one-line `RunBusy` naming the live call.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from tinycats.storage.run_lock import LeaseLost, RunBusy

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 90.0
"""A holder that has not renewed for this long is presumed dead (3 missed heartbeats)."""


class KeyValue(Protocol):
    """The part of `modal.Dict` a lease needs (tests pass an in-memory one)."""

    def get(self, key: Any, default: Any = None) -> Any: ...

    def put(self, key: Any, value: Any, *, skip_if_exists: bool = False) -> bool: ...


class RunLease:
    """The lease of `run_id` for this container of call `call_id`; see the module docstring."""

    def __init__(
        self,
        kv: KeyValue,
        run_id: str,
        call_id: str,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kv, self.run_id, self.call_id = kv, run_id, call_id
        self.holder = f"{call_id}/{uuid.uuid4().hex[:8]}"  # this container of the call
        self.ttl_s, self.clock, self.sleep = ttl_s, clock, sleep
        self.generation: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _key(self, n: int) -> str:
        return f"{self.run_id}#{n}"

    def head(self) -> tuple[int, dict[str, Any] | None]:
        """(n, entry) of the newest generation; (0, None) when the run was never leased."""
        n = int(self.kv.get(f"{self.run_id}#head", 0) or 0)
        while self.kv.get(self._key(n + 1)) is not None:
            n += 1
        return n, self.kv.get(self._key(n)) if n else None

    def live_holder(self) -> dict[str, Any] | None:
        """The newest entry if it is live (neither released nor expired), else None."""
        _, entry = self.head()
        return entry if self._is_live(entry) else None

    def _is_live(self, entry: dict[str, Any] | None) -> bool:
        return bool(entry) and not entry["released"] and entry["expires_at"] > self.clock()

    def acquire(self) -> None:
        """Take the run: wait out a live lease of this same call (a restarted input whose
        old container is in its grace period); refuse one of another call (RunBusy)."""
        while True:
            n, entry = self.head()
            if self._is_live(entry) and entry["holder"] != self.holder:
                if entry["call"] != self.call_id:
                    raise RunBusy(
                        f"run {self.run_id} is being trained by call {entry['call']}; follow "
                        f"it with `tinycats cloud logs {self.run_id}` or stop it with "
                        f"`tinycats cloud cancel {self.run_id}`"
                    )
                self.sleep(min(self.ttl_s / 3, entry["expires_at"] - self.clock()))
                continue
            if self.kv.put(self._key(n + 1), self._entry(), skip_if_exists=True):
                self.generation = n + 1
                self.kv.put(f"{self.run_id}#head", n + 1)  # a hint: readers scan past it
                return
            # another container created n+1 first: look again

    def _entry(self, *, released: bool = False) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "call": self.call_id,
            "expires_at": self.clock() + self.ttl_s,
            "released": released,
        }

    def fence(self) -> None:
        """Raise LeaseLost unless this container still holds the run (before a commit)."""
        if self.generation is None or self.kv.get(self._key(self.generation + 1)) is not None:
            raise LeaseLost(
                f"run {self.run_id}: this container's lease was taken over; stopping without "
                "publishing (the new holder resumes from the last committed checkpoint)"
            )

    def renew(self) -> None:
        """Heartbeat: push the expiry forward, after checking the lease is still ours."""
        self.fence()
        self.kv.put(self._key(self.generation), self._entry())

    def release(self) -> None:
        """Give the run up now, so a restart or a continuation need not wait for expiry."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.generation is not None and self.kv.get(self._key(self.generation + 1)) is None:
            self.kv.put(self._key(self.generation), self._entry(released=True))
        self.generation = None

    def start_heartbeat(self) -> None:
        """Renew every ttl/3 on a daemon thread until released."""

        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                try:
                    self.renew()
                except LeaseLost:
                    return  # the next fenced commit stops the run
                except Exception as err:  # a lost round trip: the next beat tries again
                    log.warning("run lease heartbeat failed (%s); retrying", err)

        self._beat = threading.Thread(target=beat, name="run-lease", daemon=True)
        self._beat.start()
