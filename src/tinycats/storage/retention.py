"""Which checkpoints to keep: a pure function of the history, so it can be property-tested.

The policy is a union of rules, each protecting something a user may need later:
the newest N (to resume), the best k by a metric (to ship), every K-th step (to
study training), the one `latest.json` points to (what a resume will load), and
anything newer than the newest committed checkpoint (work still in progress,
which another writer may be about to publish). Everything else may be deleted.
No I/O happens here; `storage.checkpoint` gathers the records and deletes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BEST_MODES = ("max", "min")


@dataclass(frozen=True)
class CheckpointRecord:
    """What retention needs to know about one checkpoint."""

    step: int
    time: float
    metric: float | None
    committed: bool = True


def _usable(metric: float | None) -> bool:
    return metric is not None and not math.isnan(metric)


def best_steps(records: Sequence[CheckpointRecord], k: int, best_mode: str = "max") -> list[int]:
    """Steps of the best `k` committed records by metric, best first (ties: newer wins).

    A record without a metric (or NaN) is never "best": an unevaluated checkpoint
    must not displace an evaluated one.
    """
    if best_mode not in BEST_MODES:
        raise ValueError(f"best_mode={best_mode!r}; choose one of {', '.join(BEST_MODES)}")
    scored = [r for r in records if r.committed and _usable(r.metric)]
    sign = 1.0 if best_mode == "max" else -1.0
    scored.sort(key=lambda r: (sign * r.metric, r.step), reverse=True)  # type: ignore[operator]
    return [r.step for r in scored[:k]]


def select_keep(records: Sequence[CheckpointRecord], **policy: Any) -> set[int]:
    """Steps to keep: last N committed ∪ best k ∪ every K-th ∪ latest ∪ newer than newest committed.

    `policy` is `keep_reasons`'s keywords; only steps present in `records` are returned.
    """
    return set(keep_reasons(records, **policy))


def keep_reasons(
    records: Sequence[CheckpointRecord],
    *,
    keep_last: int,
    keep_best: int = 0,
    best_mode: str = "max",
    keep_every: int = 0,
    latest_step: int | None = None,
) -> dict[int, list[str]]:
    """Each kept step with the rules that keep it ("last 5", "best 1", "every 100",
    "latest", "in progress"); a step absent from the result may be deleted."""
    for name, value in (
        ("keep_last", keep_last),
        ("keep_best", keep_best),
        ("keep_every", keep_every),
    ):
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")
    reasons: dict[int, list[str]] = {}
    committed = sorted(r.step for r in records if r.committed)
    for step in committed[-keep_last:] if keep_last else []:
        reasons.setdefault(step, []).append(f"last {keep_last}")
    for step in best_steps(records, keep_best, best_mode):
        reasons.setdefault(step, []).append(f"best {keep_best}")
    for step in committed if keep_every else []:
        if step % keep_every == 0:
            reasons.setdefault(step, []).append(f"every {keep_every}")
    newest_committed = committed[-1] if committed else None
    for r in records:
        if r.step == latest_step:
            reasons.setdefault(r.step, []).append("latest")
        if newest_committed is None or r.step > newest_committed:
            reasons.setdefault(r.step, []).append("in progress")
    return reasons
