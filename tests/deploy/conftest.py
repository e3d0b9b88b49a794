"""Shared by the share-and-serve tests: one tiny trained classifier and DiT per session.

Both are trained once on synthetic images (a few seconds each) into one store; every
export, server and browser test reads them and writes elsewhere, so the order of the
tests does not matter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tinycats.config import build_config
from tinycats.data.synthetic import render_synthetic
from tinycats.storage import LocalStore
from tinycats.train import run_training
from tinycats.train.evaluation import evaluate_classifier
from tinycats.train.inference import load_trained_model


@pytest.fixture(scope="session")
def store_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "out"
    store = LocalStore(out)
    classifier = build_config(
        "classifier",
        overrides=[
            "data.image_size=32",
            "data.synthetic_classes=4",
            "data.synthetic_per_class=40",
            "optim.batch_size=16",
            "optim.max_steps=50",
            "optim.warmup_steps=5",
            "optim.lr=0.002",
            "checkpoint.every_steps=50",
        ],
    )
    run_training(classifier, store, "clf", progress=False)
    evaluate_classifier(load_trained_model(store, "clf"), store, split="test")
    dit = build_config(
        "dit",
        overrides=[
            "data.synthetic_classes=4",
            "data.synthetic_per_class=16",
            "dit.width=64",
            "dit.depth=2",
            "dit.heads=4",
            "dit.preview_per_class=0",
            "dit.sample_steps=8",
            "optim.batch_size=8",
            "optim.max_steps=20",
            "checkpoint.every_steps=20",
        ],
    )
    run_training(dit, store, "gen", progress=False)
    return out


@pytest.fixture(scope="session")
def store(store_root) -> LocalStore:
    return LocalStore(store_root)


@pytest.fixture(scope="session")
def classifier(store):
    return load_trained_model(store, "clf")


@pytest.fixture(scope="session")
def generator(store):
    return load_trained_model(store, "gen")


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """One 64 px test-split image per class (PNG), larger than the model's 32 px input."""
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for label in range(4):
        path = folder / f"class{label}.png"
        Image.fromarray(render_synthetic(label, 2, 64, seed=0, split="test")).save(path)
        paths.append(path)
    return paths
