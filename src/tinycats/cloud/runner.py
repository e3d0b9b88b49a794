"""Modal's retry semantics, run locally: how tests prove a retried run resumes, not restarts.

`run_with_retries(body, retries)` calls `body(attempt)` the way Modal runs one input of
a function with `retries=modal.Retries(**retry_kwargs(retries))`:

- an exception uses one retry; the next attempt starts after `retry_delay(retries, n)`
  (the same schedule Modal computes), and after `max_retries` the last error is raised;
- a platform preemption (`attempt.preempt(reason)`, the stand-in for Modal's SIGTERM/
  SIGINT to a container it reclaims) restarts the input at once without using a retry,
  up to MAX_PLATFORM_RESTARTS times, as Modal treats lost inputs as internal failures.

Each attempt gets a fresh `PreemptionGuard` (no signal handlers: the test drives it) and
its number; the body decides what a "fresh container" means (tests mount a new
FakeVolume container per attempt, so only committed state survives). `sleep` is
injectable so a test checks the delays without waiting for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tinycats.cloud.resources import MAX_PLATFORM_RESTARTS, retry_delay
from tinycats.config import RetryConfig
from tinycats.train import PreemptionGuard

T = TypeVar("T")


@dataclass
class Attempt:
    """One try of the input: its number (1-based), its guard, and whether the platform
    preempted it."""

    number: int
    guard: PreemptionGuard = field(default_factory=lambda: PreemptionGuard(signals=()))
    preempted: bool = False

    def preempt(self, reason: str = "SIGTERM") -> None:
        """The platform reclaims this container: the guard hears the signal."""
        self.preempted = True
        self.guard.request(reason)


@dataclass
class AttemptRecord:
    number: int
    outcome: str  # "ok" | "failed" | "preempted"
    error: str | None = None
    delay: float = 0.0  # seconds slept before the next attempt


@dataclass
class RetryOutcome(Generic[T]):
    value: T
    attempts: list[AttemptRecord]

    @property
    def retries_used(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "failed")


def run_with_retries(
    body: Callable[[Attempt], T],
    retries: RetryConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_platform_restarts: int = MAX_PLATFORM_RESTARTS,
) -> RetryOutcome[T]:
    """Run `body` until it returns, retrying as Modal would; re-raise when retries run out."""
    records: list[AttemptRecord] = []
    failures = restarts = 0
    number = 0
    while True:
        number += 1
        attempt = Attempt(number)
        try:
            value = body(attempt)
        except Exception as err:
            if attempt.preempted and restarts < max_platform_restarts:
                restarts += 1
                records.append(AttemptRecord(number, "preempted", repr(err)))
                continue
            failures += 1
            if failures > retries.max_retries:
                records.append(AttemptRecord(number, "failed", repr(err)))
                raise
            delay = retry_delay(retries, failures)
            records.append(AttemptRecord(number, "failed", repr(err), delay))
            sleep(delay)
            continue
        records.append(AttemptRecord(number, "preempted" if attempt.preempted else "ok"))
        return RetryOutcome(value, records)
