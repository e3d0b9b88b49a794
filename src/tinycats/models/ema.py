"""Exponential moving average of a model's weights, for evaluation and sampling.

Averaged weights generalise better than the last iterate, and for diffusion models they
are what makes samples clean. The EMA keeps its own update counter: the warm-up decay
depends on it, so a resumed run must restore it to continue bit for bit.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under torch.compile's wrapper, so state dict names match."""
    return getattr(model, "_orig_mod", model)


class EMA:
    """EMA of parameters AND floating-point buffers (e.g. batch-norm statistics).

    Non-float buffers (batch-norm's step counter) are copied, not averaged.
    With `warmup`, the decay used at update n is min(decay, (1 + n) / (10 + n)): early
    updates follow the model closely, so a run of a few hundred steps still ends with
    a useful average instead of one stuck near the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True):
        assert 0.0 <= decay < 1.0, f"decay={decay} must be in [0, 1)"
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(_unwrap(model)).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        source = _unwrap(model).state_dict()
        averaged, targets = [], []
        for name, ema_value in self.module.state_dict().items():
            value = source[name]
            if ema_value.is_floating_point():
                averaged.append(ema_value)
                targets.append(value.to(ema_value.dtype))
            else:
                ema_value.copy_(value)
        if averaged:  # ema += (1 - decay) * (value - ema), fused over all tensors at once
            torch._foreach_lerp_(averaged, targets, 1.0 - decay)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (live tensors: copy them before training continues)."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        """Restore averaged weights and the counter saved alongside them (strict)."""
        self.module.load_state_dict(state, strict=True)
        self.num_updates = num_updates
