"""Which checkpoints to keep: a pure function of the history, so it can be property-tested.

The policy is a union of rules, each protecting something a user may need later:
the newest N (to resume), the best k by a metric (to ship), every K-th step (to
study training), the one `latest.json` points to (what a resume will load), and
anything newer than the newest committed checkpoint (work still in progress,
which another writer may be about to publish). Everything else may be deleted.

Only checkpoints that verify count towards "the newest N" and "the best k": a
corrupt newest checkpoint must not push the last good one out (it would leave a
run that can no longer resume). The newest verified checkpoint is always kept,
and a run none of whose checkpoints verifies loses nothing. Verifying means
reading every file, so the caller verifies lazily: `counted_steps` names the few
records whose verification can change the decision, and only those are checked.
No I/O happens here; `storage.checkpoint` gathers the records and deletes.
"""

from __future__ import annotations

import heapq
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
    verified: bool = True
    """False once a check found the checkpoint unusable; True means "not found bad"."""


def _usable(metric: float | None) -> bool:
    return metric is not None and not math.isnan(metric)


def best_steps(records: Sequence[CheckpointRecord], k: int, best_mode: str = "max") -> list[int]:
    """Steps of the best `k` committed, verified records by metric, best first (ties:
    newer wins).

    A record without a metric (or NaN) is never "best": an unevaluated checkpoint
    must not displace an evaluated one.
    """
    if best_mode not in BEST_MODES:
        raise ValueError(f"best_mode={best_mode!r}; choose one of {', '.join(BEST_MODES)}")
    scored = [r for r in records if r.committed and r.verified and _usable(r.metric)]
    sign = 1.0 if best_mode == "max" else -1.0
    # nlargest, not a full sort: k is a handful, the records may be 10,000.
    best = heapq.nlargest(k, scored, key=lambda r: (sign * r.metric, r.step))  # type: ignore[operator]
    return [r.step for r in best]


def counted_steps(
    records: Sequence[CheckpointRecord],
    *,
    keep_last: int,
    keep_best: int = 0,
    best_mode: str = "max",
) -> set[int]:
    """The steps kept because they count as good: the newest N and the best k verified
    committed records, and the newest verified one. Verifying exactly these (until none
    is found bad) is all `select_keep` needs to decide as if every record were verified."""
    good = (r.step for r in records if r.committed and r.verified)
    counted = set(heapq.nlargest(max(keep_last, 1), good))  # the newest verified always counts
    counted.update(best_steps(records, keep_best, best_mode))
    return counted


def select_keep(records: Sequence[CheckpointRecord], **policy: Any) -> set[int]:
    """Steps to keep: last N verified ∪ best k verified ∪ the newest verified ∪ every K-th ∪
    latest ∪ newer than the newest committed; everything when no committed record verifies.

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
    """Each kept step with the rules that keep it ("last 5", "newest verified", "best 1",
    "every 100", "latest", "in progress", "nothing verifies"); a step absent from the
    result may be deleted."""
    for name, value in (
        ("keep_last", keep_last),
        ("keep_best", keep_best),
        ("keep_every", keep_every),
    ):
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")
    good = sorted(r.step for r in records if r.committed and r.verified)
    if not good:  # nothing known good: deleting could only lose work
        return {r.step: ["nothing verifies"] for r in records}
    reasons: dict[int, list[str]] = {}
    for step in good[-keep_last:] if keep_last else []:
        reasons.setdefault(step, []).append(f"last {keep_last}")
    if good[-1] not in reasons:
        reasons[good[-1]] = ["newest verified"]
    for step in best_steps(records, keep_best, best_mode):
        reasons.setdefault(step, []).append(f"best {keep_best}")
    committed = sorted(r.step for r in records if r.committed)
    for step in committed if keep_every else []:
        if step % keep_every == 0:
            reasons.setdefault(step, []).append(f"every {keep_every}")
    for r in records:
        if r.step == latest_step:
            reasons.setdefault(r.step, []).append("latest")
        if r.step > committed[-1]:
            reasons.setdefault(r.step, []).append("in progress")
    return reasons
