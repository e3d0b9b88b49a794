"""Learning rate as a pure function of the step.

A function of the step, rather than a scheduler object with hidden state, means
resuming needs nothing but the step: the schedule cannot drift between an
interrupted and an uninterrupted run.
"""

from __future__ import annotations

import math

from tinycats.config import OptimConfig


def learning_rate(step: int, optim: OptimConfig) -> float:
    """LR for optimizer step `step` (0-based): linear warm-up, then cosine or constant."""
    warmup = min(optim.warmup_steps, optim.max_steps)  # a short run must not stay in warm-up
    if step < warmup:
        return optim.lr * (step + 1) / warmup
    if optim.schedule == "constant":
        return optim.lr
    decay_steps = max(1, optim.max_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
