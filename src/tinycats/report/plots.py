"""The report's figures, drawn with matplotlib into PNG bytes (no pyplot, no global state)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinycats.storage.metrics_log import series

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
COLORS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def curve(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], key: str, kind: str, *, log_y: bool
) -> bytes | None:
    """`key` over the steps of each run's `kind` lines, overlaid; None when no run has it."""
    fig = _figure(4.6, 2.9)
    ax = fig.subplots()
    drawn = False
    for i, (name, lines) in enumerate(runs):
        points = [(s, v) for s, v in series(lines, key, kind) if isinstance(v, int | float)]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        marker = "o" if len(points) < 30 else None
        ax.plot(steps, values, label=name, color=COLORS[i % len(COLORS)], marker=marker, ms=3)
        drawn = True
    if not drawn:
        return None
    values = [v for _, lines in runs for _, v in series(lines, key, kind)]
    if log_y and min(values) > 0 and max(values) > 20 * min(values):  # spans decades
        ax.set_yscale("log")
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=7)
    return _png(fig)


def confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """The confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    n = len(classes)
    size = 1.6 + 0.42 * n
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels=classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels=classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for r, row in enumerate(matrix):
        for c, count in enumerate(row):
            if count:
                color = "white" if count > peak / 2 else "black"
                ax.text(c, r, str(count), ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def per_class(accuracy: dict[str, float]) -> bytes:
    """Per-class accuracy as horizontal bars, worst at the bottom."""
    names = sorted(accuracy, key=lambda k: accuracy[k])
    fig = _figure(4.6, 0.8 + 0.28 * len(names))
    ax = fig.subplots()
    ax.barh(names, [accuracy[k] for k in names], color=COLORS[0])
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy")
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def time_split(parts: dict[str, float]) -> bytes:
    """Where the time went, as one stacked bar (seconds)."""
    fig = _figure(6.4, 1.9)
    ax = fig.subplots()
    left = 0.0
    for i, (name, seconds) in enumerate(parts.items()):
        ax.barh([0], [seconds], left=left, color=COLORS[i % len(COLORS)], label=name)
        left += seconds
    ax.set_yticks([])
    ax.set_xlabel("seconds")
    ax.legend(ncols=len(parts), fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.02))
    return _png(fig)


def attempts(rows: Sequence[tuple[float, float, str]]) -> bytes:
    """The attempts as bars on the wall clock: (start, end, status) in epoch seconds."""
    status_color = {"completed": COLORS[2], "preempted": COLORS[3], "failed": COLORS[1]}
    origin = min(start for start, _, _ in rows)
    fig = _figure(6.4, 0.9 + 0.3 * len(rows))
    ax = fig.subplots()
    for i, (start, end, status) in enumerate(rows):
        color = status_color.get(status, COLORS[0])
        ax.barh([i + 1], [max(end - start, 1.0) / 60], left=(start - origin) / 60, color=color)
        ax.text((end - origin) / 60, i + 1, f" {status}", va="center", fontsize=7)
    ax.set_yticks(range(1, len(rows) + 1), labels=[f"#{i}" for i in range(1, len(rows) + 1)])
    ax.invert_yaxis()
    ax.set_xlabel("minutes since the first start")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
