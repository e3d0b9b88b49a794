"""EMA: the warm-up formula, the update counter, buffers, and an exact state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinycats.models.ema import EMA


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_warmup_decay_formula_and_counter() -> None:
    model = _net()
    ema = EMA(model, decay=0.99)
    decays = []
    for _ in range(1000):
        decays.append(ema.current_decay())
        ema.update(model)
    assert ema.num_updates == 1000
    assert decays[0] == pytest.approx(1 / 10)
    assert decays[1] == pytest.approx(2 / 11)
    assert decays[199] == pytest.approx(200 / 209)
    assert decays[900] == decays[-1] == 0.99  # (1+n)/(10+n) reaches the cap at n = 890
    assert EMA(_net(), decay=0.99, warmup=False).current_decay() == 0.99


def test_update_averages_parameters_and_float_buffers() -> None:
    model = _net()
    ema = EMA(model, decay=0.9, warmup=False)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.add_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model)
    state = ema.state_dict()
    assert torch.allclose(state["0.weight"], start["0.weight"] + 0.1)
    assert torch.allclose(state["1.running_mean"], start["1.running_mean"] + 0.2)
    assert state["1.num_batches_tracked"].item() == 7  # integers are copied, not averaged
    assert ema.num_updates == 1


def test_ema_module_is_frozen_eval_copy() -> None:
    model = _net()
    ema = EMA(model, decay=0.9)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert ema.module is not model
    with torch.no_grad():
        model[0].weight.add_(5.0)
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_state_round_trip_continues_bitwise() -> None:
    model = _net()
    gen = torch.Generator().manual_seed(0)
    trajectory = []  # the model's state after each of 8 training steps
    for _ in range(8):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        trajectory.append({k: v.clone() for k, v in model.state_dict().items()})

    def follow(ema: EMA, states: list[dict[str, torch.Tensor]]) -> None:
        for state in states:
            model.load_state_dict(state)
            ema.update(model)

    uninterrupted = EMA(_net(), decay=0.999)
    follow(uninterrupted, trajectory)

    first = EMA(_net(), decay=0.999)
    follow(first, trajectory[:5])
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = EMA(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), decay=0.999)
    resumed.load_state_dict(saved, first.num_updates)
    assert resumed.num_updates == 5
    follow(resumed, trajectory[5:])

    assert resumed.num_updates == uninterrupted.num_updates == 8
    for k, v in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


def test_load_state_dict_is_strict() -> None:
    ema = EMA(_net(), decay=0.9)
    state = dict(ema.state_dict())
    state.pop("0.bias")
    with pytest.raises(RuntimeError, match=r"0\.bias"):
        ema.load_state_dict(state, 3)


def test_unwraps_torch_compile_prefix() -> None:
    model = _net()
    wrapper = nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule holds
    ema = EMA(wrapper, decay=0.5, warmup=False)
    assert set(ema.state_dict()) == set(model.state_dict())
    ema.update(wrapper)
    assert ema.num_updates == 1
