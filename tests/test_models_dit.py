"""TinyDiT: shapes per preset, adaLN-zero identity at init, exact patch round trip."""

from __future__ import annotations

import pytest
import torch

from tinycats.config import DiTConfig
from tinycats.errors import CheckpointError, ConfigError
from tinycats.models import model_from_args
from tinycats.models.dit import (
    PRESETS,
    DiTArgs,
    TinyDiT,
    dit_args_from_config,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)

SMALL = DiTArgs(image_size=16, patch_size=4, width=32, depth=2, heads=4, num_classes=3)


def _randomise_adaln(model: TinyDiT) -> None:
    """Give the zero-initialised layers values, as after some training."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            w = block.adaLN[-1].weight
            w.copy_(torch.randn(w.shape, generator=gen) * 0.1)
        for layer in (model.final.adaLN[-1], model.final.linear):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("preset", ["test", "small", "tiny"])
def test_every_preset_forward_shape(preset: str) -> None:
    args = dit_args_from_config(DiTConfig(preset=preset), PRESETS[preset]["image_size"], 12)
    model = TinyDiT(args)
    batch = 1 if preset == "tiny" else 3
    size = args.image_size
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        out = model(x, torch.rand(batch), torch.randint(0, 13, (batch,)))
    assert out.shape == (batch, 3, size, size)
    assert model.null_class == 12
    assert model.y_embed.num_embeddings == 13


def test_tiny_preset_is_issue_6_architecture() -> None:
    assert PRESETS["tiny"] == {
        "image_size": 128,
        "patch_size": 16,
        "width": 384,
        "depth": 12,
        "heads": 6,
    }


def test_config_overrides_preset_and_data_sets_image_size() -> None:
    args = dit_args_from_config(DiTConfig(preset="small", depth=2, heads=4), 48, 5)
    assert (args.image_size, args.patch_size, args.width, args.depth, args.heads) == (
        48,
        8,
        192,
        2,
        4,
    )
    assert args.num_classes == 5


def test_bad_shapes_name_the_keys() -> None:
    with pytest.raises(ConfigError, match=r"data.image_size=30 .* dit.patch_size=4"):
        dit_args_from_config(DiTConfig(preset="test"), 30, 4)
    with pytest.raises(ConfigError, match=r"dit.width=100 .* dit.heads=3"):
        dit_args_from_config(DiTConfig(preset="test", width=100, heads=3), 32, 4)


def test_each_block_is_identity_at_init() -> None:
    model = TinyDiT(SMALL)
    x = torch.randn(2, 16, 32)  # (B, T, C)
    c = torch.randn(2, 32)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)


def test_model_output_is_zero_at_init_and_not_after_training_values() -> None:
    model = TinyDiT(SMALL)
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 3])
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    _randomise_adaln(model)
    assert model(x, t, y).abs().max() > 0


def test_conditioning_changes_the_output() -> None:
    model = TinyDiT(SMALL)
    _randomise_adaln(model)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        a = model(x, torch.tensor([0.2]), torch.tensor([0]))
        b = model(x, torch.tensor([0.2]), torch.tensor([1]))
        c = model(x, torch.tensor([0.8]), torch.tensor([0]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_patchify_round_trip_is_exact() -> None:
    x = torch.randn(2, 3, 12, 20)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 3 * 5, 4 * 4 * 3)
    assert torch.equal(unpatchify(tokens, 4, 3, 12, 20), x)


def test_patchify_token_holds_its_patch() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    tokens = patchify(x, 2)  # (1, 4, 8)
    # token 1 = top-right patch; values ordered (row, col, channel)
    expected = torch.stack([x[0, :, 0:2, 2:4][:, i, j] for i in range(2) for j in range(2)])
    assert torch.equal(tokens[0, 1], expected.reshape(-1))


def test_pos_embed_is_fixed_and_distinct() -> None:
    emb = sincos_pos_embed_2d(32, 4)
    assert emb.shape == (16, 32)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 0.1  # every position differs
    model = TinyDiT(SMALL)
    assert "pos_embed" not in model.state_dict()
    assert not any("pos_embed" in n for n, _ in model.named_parameters())


def test_checkpoints_from_before_x_prediction_load_as_velocity_models() -> None:
    old_args = {
        "image_size": 16,
        "patch_size": 4,
        "width": 32,
        "depth": 1,
        "heads": 4,
        "num_classes": 2,
        "in_channels": 3,
        "mlp_ratio": 4.0,
    }
    model = model_from_args("dit", old_args)
    assert (model.prediction, model.noise_scale) == ("v", 1.0)
    assert model_from_args("dit", {**old_args, "prediction": "x"}).prediction == "x"
    with pytest.raises(CheckpointError, match="prediction='eps'"):
        model_from_args("dit", {**old_args, "prediction": "eps"})


def test_config_chooses_prediction_and_noise_scale() -> None:
    args = dit_args_from_config(DiTConfig(prediction="v", noise_scale=0.5), 32, 3)
    assert (args.prediction, args.noise_scale) == ("v", 0.5)
    assert DiTConfig().prediction == "x"
    assert TinyDiT(args).prediction == "v"
