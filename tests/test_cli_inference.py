"""eval, predict, sample and export on small trained models, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinycats.config import build_config
from tinycats.errors import ConfigError
from tinycats.models.classifier import normalize_images
from tinycats.storage import LocalStore, RunRegistry
from tinycats.train import run_training
from tinycats.train.evaluation import evaluate_classifier, predict_images
from tinycats.train.inference import load_trained_model


@pytest.fixture
def tinycats(cli):
    """`tinycats ARGS --out OUT`, in this process."""
    return lambda *args, out: cli(*args, "--out", str(out))


@pytest.fixture(scope="module")
def classifier_run(module_tmp: Path) -> Path:
    out = module_tmp / "out"
    config = build_config(
        "classifier",
        overrides=[
            "data.image_size=32",
            "data.synthetic_classes=4",
            "data.synthetic_per_class=48",
            "optim.batch_size=16",
            "optim.max_steps=60",
            "optim.warmup_steps=5",
            "optim.lr=0.002",
            "checkpoint.every_steps=30",
        ],
    )
    run_training(config, LocalStore(out), "clf", progress=False)
    return out


def test_eval_reports_accuracy_confusion_and_updates_the_run(classifier_run, tinycats) -> None:
    result = tinycats("eval", "clf", "--split", "test", "--json", out=classifier_run)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["top1"] >= 0.9 and report["top3"] >= report["top1"]
    confusion = np.array(report["confusion"])
    assert confusion.shape == (4, 4) and confusion.sum() == report["n"]
    assert np.trace(confusion) / report["n"] == pytest.approx(report["top1"])
    assert Path(report["confusion_png"]).is_file()
    record = RunRegistry(LocalStore(classifier_run)).get("clf")
    assert record["eval"]["test"]["top1"] == pytest.approx(report["top1"])
    assert (record["eval"]["test"]["image_size"], record["eval"]["test"]["tta_hflip"]) == (
        32,
        False,
    )


def test_eval_at_another_resolution(classifier_run, tinycats) -> None:
    args = ("eval", "clf", "--split", "test", "--json")
    trained = json.loads(tinycats(*args, out=classifier_run).stdout)
    larger = json.loads(tinycats(*args, "--image-size", "48", out=classifier_run).stdout)
    assert (trained["image_size"], larger["image_size"]) == (32, 48)
    assert larger["n"] == trained["n"]


def test_eval_image_size_comes_from_the_classifier_config() -> None:
    train = ["data.image_size=96"]
    assert build_config("classifier", overrides=train).eval_image_size == 96
    fixres = [*train, "classifier.eval_image_size=128"]
    assert build_config("classifier", overrides=fixres).eval_image_size == 128
    assert build_config("dit", overrides=fixres).eval_image_size == 96  # a classifier setting


def test_eval_and_predict_default_to_the_runs_eval_image_size(classifier_run, tmp_path) -> None:
    trained = load_trained_model(LocalStore(classifier_run), "clf")
    trained.config.classifier.eval_image_size = 40
    report = evaluate_classifier(trained, LocalStore(classifier_run), split="test")
    assert report.image_size == 40 and report.n > 0
    seen: list[tuple[int, ...]] = []
    trained.model.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    path = tmp_path / "cat.png"
    Image.fromarray(np.full((50, 60, 3), 128, np.uint8)).save(path)
    predict_images(trained, [path])
    assert seen == [(1, 3, 40, 40)]


def test_eval_and_predict_see_the_runs_central_crop(classifier_run, tmp_path) -> None:
    trained = load_trained_model(LocalStore(classifier_run), "clf")
    trained.config.classifier.eval_crop = 0.5
    report = evaluate_classifier(trained, LocalStore(classifier_run), split="test")
    assert report.crop == 0.5
    assert RunRegistry(LocalStore(classifier_run)).get("clf")["eval"]["test"]["crop"] == 0.5
    seen: list[torch.Tensor] = []
    trained.model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    photo = np.full((64, 64, 3), 255, np.uint8)
    photo[8:56, 8:56] = 0  # a black centre (wider than the crop, past any resize blur)
    path = tmp_path / "framed.png"
    Image.fromarray(photo).save(path)
    predict_images(trained, [path])
    black = normalize_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    assert torch.equal(seen[0], black)  # only the central half reaches the model, no frame


def test_eval_crop_option_overrides_the_run(classifier_run, tinycats) -> None:
    args = ("eval", "clf", "--split", "test", "--json")
    whole = json.loads(tinycats(*args, out=classifier_run).stdout)
    central = json.loads(tinycats(*args, "--crop", "0.75", out=classifier_run).stdout)
    assert (whole["crop"], central["crop"]) == (1.0, 0.75) and central["n"] == whole["n"]
    bad = tinycats(*args, "--crop", "0.2", out=classifier_run)
    assert bad.returncode == 2 and "--crop" in bad.stderr


def test_eval_crop_is_a_classifier_setting_within_range() -> None:
    assert build_config("classifier", overrides=["classifier.eval_crop=0.8"]).eval_crop == 0.8
    assert build_config("dit", overrides=["classifier.eval_crop=0.8"]).eval_crop == 1.0
    with pytest.raises(ConfigError, match="eval_crop"):
        build_config("classifier", overrides=["classifier.eval_crop=0.3"])


def test_eval_with_mirror_tta(classifier_run, tinycats) -> None:
    args = ("eval", "clf", "--split", "test", "--json")
    plain = json.loads(tinycats(*args, out=classifier_run).stdout)
    tta = json.loads(tinycats(*args, "--tta", out=classifier_run).stdout)
    assert (plain["tta_hflip"], tta["tta_hflip"]) == (False, True)
    assert tta["n"] == plain["n"] and tta["top1"] >= 0.9


def test_predict_names_the_drawn_class(classifier_run, tmp_path, tinycats) -> None:
    from tinycats.data import render_synthetic, synthetic_class_names

    names = synthetic_class_names(4)
    paths = []
    for label in range(4):
        image = render_synthetic(label, 1000 + label, 40, seed=0, split="test")
        path = tmp_path / f"class{label}.webp"  # any format PIL reads
        Image.fromarray(image).save(path)
        paths.append(path)
    result = tinycats("predict", "clf", *map(str, paths), "--json", out=classifier_run)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)
    assert [p["top"][0]["breed"] for p in predictions] == names
    assert all(len(p["top"]) == 3 for p in predictions)
    assert all(abs(sum(t["probability"] for t in p["top"]) - 1) < 0.2 for p in predictions)


def test_predict_on_a_corrupt_image_is_one_line_exit_2(classifier_run, tmp_path, tinycats) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = tinycats("predict", "clf", str(bad), out=classifier_run)
    assert result.returncode == 2
    assert "cannot read image" in result.stderr and len(result.stderr.splitlines()) == 1


def test_export_onnx_matches_pytorch(classifier_run, tmp_path, tinycats) -> None:
    pytest.importorskip("onnxruntime")
    target = tmp_path / "model.onnx"
    result = tinycats("export", "onnx", "clf", "-o", str(target), "--json", out=classifier_run)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert target.is_file() and summary["max_abs_diff"] <= 1e-4
    # the file describes the preprocessing a consumer must repeat: the run's eval size, crop
    assert summary["preprocessing"]["image_size"] == 32 and summary["preprocessing"]["crop"] == 1.0
    assert len(summary["classes"]) == 4 and summary["task"] == "classifier"


def test_sample_rejects_unknown_breed_listing_valid_ones(tmp_path, tinycats) -> None:
    out = tmp_path / "out"
    config = build_config(
        "dit",
        overrides=[
            "data.synthetic_classes=3",
            "data.synthetic_per_class=16",
            "dit.width=32",
            "dit.depth=1",
            "dit.preview_per_class=0",
            "optim.batch_size=8",
            "optim.max_steps=2",
        ],
    )
    run_training(config, LocalStore(out), "gen", progress=False)
    bad = tinycats("sample", "gen", "--breed", "Tabby", out=out)
    assert bad.returncode == 2
    assert "unknown breed 'Tabby'" in bad.stderr and "00_circle_plain" in bad.stderr

    grid = tmp_path / "grid.png"
    args = ("sample", "gen", "--n", "2", "--steps", "3", "--seed", "5", "-o", str(grid))
    assert tinycats(*args, out=out).returncode == 0
    first = np.asarray(Image.open(grid))
    assert tinycats(*args, out=out).returncode == 0
    assert np.array_equal(first, np.asarray(Image.open(grid)))  # deterministic for a seed
    assert 3 * 32 <= first.shape[0] < 4 * 32  # one row per class (plus padding)


def test_eval_of_an_unknown_run_is_one_line_exit_2(tmp_path, tinycats) -> None:
    result = tinycats("eval", "nope", out=tmp_path / "empty")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


@pytest.mark.slow
def test_real_photos_train_and_evaluate_end_to_end(tmp_path, tinycats, oxford_mini) -> None:
    out = tmp_path / "out"
    train = tinycats(
        "train",
        "classifier",
        "--data",
        str(oxford_mini),
        "--run-id",
        "real",
        "--max-steps",
        "30",
        "--set",
        "data.image_size=64",
        "--set",
        "optim.batch_size=32",
        "--no-progress",
        "--json",
        out=out,
    )
    assert train.returncode == 0, train.stderr
    assert json.loads(train.stdout)["status"] == "completed"
    evaluation = tinycats("eval", "real", "--split", "test", "--json", out=out)
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)
    assert report["n"] == 236 and len(report["classes"]) == 12
    assert report["top3"] > 3 / 12  # better than chance after 30 steps
