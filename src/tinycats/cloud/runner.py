"""Modal's call semantics, run locally: how tests prove a run survives, resumes and goes on.

`run_with_retries(body, retries)` runs one input the way Modal does for a function
with `retries=modal.Retries(**retry_kwargs(retries))`:

- an exception is a failure: it uses one retry, the next attempt starts after
  `retry_delay(retries, n)` (the schedule of modal 1.6.4 `retries.RetryManager`), and
  after `max_retries` the last error is raised;
- a KeyboardInterrupt is how an input ends when the platform interrupts its container
  (SIGINT and a grace period): the runtime sends no output for it, so the input is
  restarted at once without using a retry (an internal failure: modal 1.6.4
  `_functions._InputPlaneInvocation.run_function` re-submits those immediately, up to
  `MAX_INTERNAL_FAILURE_COUNT` = 8 times), and that is modelled here.

`run_chain(body, retries)` follows a run across its calls: an input whose value has
status "continued" was followed by a new call (its own spawn), which starts with a
fresh retry budget, as a spawned call does on Modal.

Each attempt gets a fresh `PreemptionGuard` (no signal handlers: the test drives it);
the body decides what a fresh container means (tests mount new FakeVolume containers,
so only published state survives). `sleep` is injectable, so no test waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinycats.cloud.resources import MAX_PLATFORM_RESTARTS, retry_delay
from tinycats.config import RetryConfig
from tinycats.train import PreemptionGuard


@dataclass
class Attempt:
    """One try of an input: its call (1-based), its number within the call, its guard."""

    number: int
    call: int = 1
    guard: PreemptionGuard = field(default_factory=lambda: PreemptionGuard(signals=()))

    def preempt(self, reason: str = "SIGINT") -> None:
        """The platform reclaims this container: the guard hears the signal."""
        self.guard.request(reason)


@dataclass
class AttemptRecord:
    call: int
    number: int
    outcome: str  # "ok" | "failed" | "interrupted"
    error: str | None = None
    delay: float = 0.0  # seconds slept before the next attempt


@dataclass
class RetryOutcome:
    value: Any
    attempts: list[AttemptRecord]

    @property
    def retries_used(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "failed")


def run_with_retries(
    body: Callable[[Attempt], Any],
    retries: RetryConfig,
    *,
    call: int = 1,
    sleep: Callable[[float], None] = time.sleep,
    max_platform_restarts: int = MAX_PLATFORM_RESTARTS,
) -> RetryOutcome:
    """Run `body` until it returns, retrying as Modal would; re-raise when retries run out."""
    records: list[AttemptRecord] = []
    failures = restarts = 0
    number = 0
    while True:
        number += 1
        attempt = Attempt(number, call)
        try:
            value = body(attempt)
        except KeyboardInterrupt as err:
            restarts += 1
            records.append(AttemptRecord(call, number, "interrupted", repr(err)))
            if restarts >= max_platform_restarts:
                raise
            continue
        except Exception as err:
            failures += 1
            if failures > retries.max_retries:
                records.append(AttemptRecord(call, number, "failed", repr(err)))
                raise
            delay = retry_delay(retries, failures)
            records.append(AttemptRecord(call, number, "failed", repr(err), delay))
            sleep(delay)
            continue
        records.append(AttemptRecord(call, number, "ok"))
        return RetryOutcome(value, records)


def run_chain(
    body: Callable[[Attempt], Any],
    retries: RetryConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_calls: int = 50,
) -> RetryOutcome:
    """Run a run's calls one after another while each returns status "continued"."""
    records: list[AttemptRecord] = []
    for call in range(1, max_calls + 1):
        outcome = run_with_retries(body, retries, call=call, sleep=sleep)
        records.extend(outcome.attempts)
        value = outcome.value
        if not (isinstance(value, dict) and value.get("status") == "continued"):
            return RetryOutcome(value, records)
    raise RuntimeError(f"the run was still continuing after {max_calls} calls")
