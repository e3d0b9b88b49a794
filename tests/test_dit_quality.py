"""`tinycats eval DIT_RUN --judge CLASSIFIER_RUN`: the judge's features, the Fréchet distance
through torchmetrics, the reference rows, the run record, and bad input."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from tinycats.config import build_config
from tinycats.models.classifier import classify
from tinycats.storage import LocalStore, RunRegistry
from tinycats.train import run_training
from tinycats.train.dit_quality import (
    TRIVIAL_NOISE,
    evaluate_dit,
    frechet_distances,
    inception_fid,
    load_split,
    trivial_samples,
)
from tinycats.train.inference import load_trained_model
from tinycats.train.judge import JudgeFeatures

pytest.importorskip("torchmetrics")


def synthetic(tmp: Path, classes: int) -> list[str]:
    return [
        "data.image_size=32",
        f"data.synthetic_classes={classes}",
        "data.synthetic_per_class=32",
        f"data.dir={json.dumps(str(tmp / 'data'))}",
        "optim.batch_size=16",
        "optim.warmup_steps=5",
    ]


@pytest.fixture(scope="module")
def runs(module_tmp: Path) -> Path:
    """One store: a 4-class judge, a 3-class classifier and a tiny 4-class DiT (~15 s)."""
    store = LocalStore(module_tmp / "out")
    for run_id, classes, steps in (("judge", 4, 60), ("judge3", 3, 1)):
        config = build_config(
            "classifier",
            overrides=[
                *synthetic(module_tmp, classes),
                f"optim.max_steps={steps}",
                "optim.lr=0.002",
            ],
        )
        run_training(config, store, run_id, progress=False)
    dit = build_config(
        "dit",
        overrides=[
            *synthetic(module_tmp, 4),
            "dit.preset=test",
            "dit.width=64",
            "dit.depth=2",
            "dit.preview_per_class=0",
            "optim.max_steps=30",
            "optim.lr=0.001",
        ],
    )
    run_training(dit, store, "gen", progress=False)
    return store.root


def test_judge_features_are_the_layer_before_the_judges_head(runs) -> None:
    judge = load_trained_model(LocalStore(runs), "judge")
    features = JudgeFeatures(judge)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    f = features(images)
    assert f.shape == (5, features.num_features) == (5, 512)
    expected = classify(judge.model, features.view(images))
    torch.testing.assert_close(features.head(f), expected, rtol=1e-4, atol=1e-4)


def test_frechet_distance_is_zero_to_itself_and_orders_the_references(runs) -> None:
    store = LocalStore(runs)
    dit, judge = load_trained_model(store, "gen"), load_trained_model(store, "judge")
    test, _, _ = load_split(dit, store, "test", None)
    train, train_labels, _ = load_split(dit, store, "train", None)
    labels = torch.arange(len(test)) % 4
    trivial = trivial_samples(train, train_labels, labels, seed=0)
    distances = frechet_distances(
        JudgeFeatures(judge),
        test,
        {"itself": test, "train": train[: len(test)], "trivial": trivial},
    )
    assert abs(distances["itself"]) < 1e-3 * distances["trivial"], distances
    assert 0 < distances["train"] < distances["trivial"], distances


def test_trivial_samples_are_each_breeds_blurred_mean_plus_noise() -> None:
    train = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    train[4:] = 200  # class 1 is uniformly 200, class 0 uniformly 0 (+ noise clamped at 0)
    train_labels = torch.tensor([0] * 4 + [1] * 4)
    samples = trivial_samples(train, train_labels, torch.tensor([1] * 50 + [0] * 50), seed=3)
    ones = samples[:50].float()
    assert ones.mean().item() == pytest.approx(200, abs=1)
    assert ones.std().item() == pytest.approx(TRIVIAL_NOISE * 255, rel=0.05)
    assert samples[50:].float().mean().item() < 0.5 * TRIVIAL_NOISE * 255  # half-normal of N(0, s)
    again = trivial_samples(train, train_labels, torch.tensor([1] * 50 + [0] * 50), seed=3)
    assert torch.equal(samples, again)


def test_eval_judge_prints_rows_and_records_them(runs, cli) -> None:
    args = ("eval", "gen", "--judge", "judge", "--n", "16", "--steps", "4", "--json")
    result = cli(*args, "--out", str(runs))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["n"], report["steps"], report["judge"]) == (16, 4, "judge")
    assert set(report["per_breed"]) == set(load_trained_model(LocalStore(runs), "gen").classes)
    # The judge reads real photos through the same view: it must know them, or the view
    # or the class mapping is wrong.
    assert report["rows"]["real_test"]["consistency"] >= 0.9, report["rows"]
    assert 0.0 <= report["consistency"] <= 1.0
    floor, ceiling = report["rows"]["real_train"]["frechet"], report["rows"]["trivial"]["frechet"]
    assert 0 < floor < ceiling, report["rows"]
    assert report["frechet"] > floor  # 30 steps of a 2-block DiT is not the data
    assert report["inception_fid"] is None and "skipped" in report["inception_skipped"]
    record = RunRegistry(LocalStore(runs)).get("gen")["eval"]["quality"]
    assert record["frechet"] == report["frechet"] and record["rows"] == report["rows"]
    # The same seed gives the same samples, so the same figures, through the API too.
    store = LocalStore(runs)
    again = evaluate_dit(
        load_trained_model(store, "gen"),
        load_trained_model(store, "judge"),
        store,
        n=16,
        steps=4,
        record=False,
    )
    assert again.frechet == pytest.approx(report["frechet"], rel=1e-6)
    assert again.consistency == report["consistency"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["gen", "--judge", "gen"], "--judge gen is a dit run; pass a classifier run"),
        (["gen", "--judge", "nope"], "no run or checkpoint folder 'nope'"),
        (["gen", "--judge", "judge3"], "judge3 knows other classes than gen"),
        (["gen", "--judge", "judge", "--n", "0"], "--n 0: the samples to judge"),
        (["gen", "--judge", "judge", "--n", "-3"], "--n -3: the samples to judge"),
        (["gen"], "pass --judge CLASSIFIER_RUN"),
        (["judge", "--judge", "judge"], "--judge applies to a DiT run"),
    ],
)
def test_eval_judge_bad_input_is_one_line_exit_2(runs, cli, args, expected) -> None:
    result = cli("eval", *args, "--out", str(runs))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_inception_fid_says_why_it_is_skipped(monkeypatch) -> None:
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import → ModuleNotFoundError
    fid, why = inception_fid(images, images)
    assert fid is None and "torch-fidelity is not installed" in why

    def offline(**_):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    import torchmetrics.image.fid as fid_module

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setattr(fid_module, "FrechetInceptionDistance", offline)
    fid, why = inception_fid(images, images)
    assert fid is None and "weights could not be loaded (<urlopen error" in why
