"""MixUp / CutMix: what is mixed, and with which label weight."""

from __future__ import annotations

import pytest
import torch

from tinycats.train.classifier_task import mix_batch


def batch() -> torch.Tensor:
    # image i is constant i: where every pixel came from stays visible after mixing
    return torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).clone()


def test_off_returns_the_batch_untouched() -> None:
    x = batch()
    mixed, partner, lam = mix_batch(x, 0.0, 0.0)
    assert mixed is x and partner is None and lam == 1.0


def test_mixup_is_the_convex_combination_with_the_partner() -> None:
    torch.manual_seed(0)
    x = batch()
    mixed, partner, lam = mix_batch(x, 0.4, 0.0)
    assert 0.0 <= lam <= 1.0
    expected = lam * x + (1 - lam) * x[partner]
    assert torch.allclose(mixed, expected)


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_label_weight_is_the_share_of_original_pixels(seed: int) -> None:
    torch.manual_seed(seed)
    x = batch()
    mixed, partner, lam = mix_batch(x, 0.0, 1.0)
    for i in range(4):
        if partner[i] == i:
            continue
        original = (mixed[i] == x[i]).float().mean().item()
        assert original == pytest.approx(lam)


def test_mixing_is_reproducible_from_the_rng_state() -> None:
    torch.manual_seed(3)
    first = mix_batch(batch(), 0.2, 1.0)
    torch.manual_seed(3)
    second = mix_batch(batch(), 0.2, 1.0)
    assert torch.equal(first[0], second[0]) and first[2] == second[2]
