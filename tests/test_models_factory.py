"""The uniform factory (create_model / model_from_args) and the labelled sample grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinycats.config import build_config
from tinycats.errors import CheckpointError, ConfigError
from tinycats.models import create_model, model_from_args
from tinycats.models.dit import TinyDiT
from tinycats.models.grid import PAD, make_grid_image


def test_model_args_rebuild_the_saved_architecture_not_the_defaults() -> None:
    """Resume rebuilds the model from a checkpoint's `model_args` alone: every field they
    hold must shape the model, whatever the config's defaults are today."""
    resnet = model_from_args("classifier", json.loads('{"arch": "resnet34", "num_classes": 13}'))
    blocks = [len(stage) for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)]
    assert blocks == [3, 4, 6, 3] and resnet.fc.out_features == 13  # ResNet-34, not 18
    saved = {"image_size": 16, "patch_size": 4, "width": 64, "depth": 2, "heads": 4}
    dit = model_from_args("dit", {**saved, "num_classes": 5, "prediction": "v"})
    assert isinstance(dit, TinyDiT) and len(dit.blocks) == 2
    assert dit.patch_embed.weight.shape == (64, 4 * 4 * 3)  # (width, patch_size² × RGB)
    assert dit.y_embed.weight.shape[0] == 5 + 1  # the classes and the CFG null class
    assert dit.args.prediction == "v"


def test_dit_args_follow_config_and_data() -> None:
    config = build_config("dit", overrides=["dit.preset='small'", "data.image_size=64"])
    model, args = create_model(config, 12)
    assert isinstance(model, TinyDiT)
    assert args == {
        "image_size": 64,
        "patch_size": 8,
        "width": 192,
        "depth": 6,
        "heads": 6,
        "num_classes": 12,
        "in_channels": 3,
        "mlp_ratio": 4.0,
        "prediction": "x",
        "noise_scale": 1.0,
    }


def test_classifier_args_do_not_carry_pretrained() -> None:
    config = build_config("classifier")
    _, args = create_model(config, 12)
    assert args == {"arch": "resnet18", "num_classes": 12}


def test_unknown_task_and_bad_model_args() -> None:
    with pytest.raises(ConfigError, match="unknown task 'gan'; choose one of classifier, dit"):
        build_config("gan")
    with pytest.raises(CheckpointError, match="unknown task 'gan'; expected one of classifier"):
        model_from_args("gan", {})
    with pytest.raises(CheckpointError, match=r"missing \['heads'\], unknown \['headz'\]"):
        model_from_args(
            "dit",
            {
                "image_size": 16,
                "patch_size": 4,
                "width": 32,
                "depth": 1,
                "headz": 4,
                "num_classes": 2,
            },
        )


def test_grid_size_and_labels() -> None:
    rows = ["Bengal", "Sphynx"]
    images = torch.zeros(2 * 3, 3, 16, 16, dtype=torch.uint8)
    images[3:] = 255  # the second row is white, the first black
    grid = make_grid_image(images, rows, ncols=3)
    width, height = grid.size
    assert height == 2 * (16 + PAD) + PAD
    label_width = width - (3 * (16 + PAD) + PAD)
    assert label_width > 20  # room for the names
    # cells land where expected: first row black, second row white
    assert grid.getpixel((label_width + PAD + 1, PAD + 1)) == (0, 0, 0)
    assert grid.getpixel((width - PAD - 2, height - PAD - 2)) == (255, 255, 255)
    # the label column holds dark text pixels in each row, on white
    for r in range(2):
        top = PAD + r * (16 + PAD)
        label = grid.crop((0, top, label_width, top + 16))
        assert np.asarray(label).min() < 128


def test_longer_labels_widen_the_grid() -> None:
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    short = make_grid_image(images, ["a"], ncols=2)
    long = make_grid_image(images, ["British_Shorthair"], ncols=2)
    assert long.size[0] > short.size[0]
    assert long.size[1] == short.size[1]
