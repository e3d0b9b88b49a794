"""`tinycats export hf`: the folder, its card, the round trip, and the push to a fake Hub."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tinycats.deploy.card import NOT_EVALUATED, model_card
from tinycats.deploy.hf import HubError, export_hf, push_to_hub
from tinycats.errors import CheckpointError, StorageError
from tinycats.storage import RunRegistry
from tinycats.train.dit_task import sample_grid
from tinycats.train.evaluation import predict_images
from tinycats.train.inference import load_trained_model

pytest.importorskip("huggingface_hub")


def front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module")
def exported(store, classifier, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "clf-export"
    export_hf(classifier, RunRegistry(store).get("clf"), folder)
    return folder


def test_classifier_folder_holds_weights_config_and_a_card_of_recorded_figures(
    exported, store
) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((exported / "config.json").read_text())
    assert config["task"] == "classifier" and config["architecture"] == "resnet18"
    assert config["classes"] == [
        f"0{i}_{s}_plain" for i, s in enumerate(("circle", "square", "triangle", "diamond"))
    ]
    pre = config["preprocessing"]
    assert (pre["image_size"], pre["stored_size"], pre["crop"]) == (32, 36, 1.0)
    assert pre["mean"] == [0.485, 0.456, 0.406] and pre["std"] == [0.229, 0.224, 0.225]

    recorded = RunRegistry(store).get("clf")["eval"]["test"]
    meta = front_matter((exported / "README.md").read_text())
    assert meta["library_name"] == "tinycats" and meta["license"] == "mit"  # synthetic data
    metrics = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"top1": round(recorded["top1"], 4), "top3": round(recorded["top3"], 4)}
    assert NOT_EVALUATED not in (exported / "README.md").read_text()


def test_card_says_not_evaluated_without_an_evaluation_of_the_exported_step(classifier) -> None:
    for record in (None, {"eval": {"test": {"top1": 0.9, "top3": 1.0, "step": 7}}}):
        card = model_card(classifier, record, "clf", "mit")
        assert NOT_EVALUATED in card and "0.9000" not in card
        assert "model-index" not in front_matter(card)


def test_predict_on_the_exported_folder_gives_the_runs_answer(
    exported, store, classifier, photos, cli
) -> None:
    from_folder = load_trained_model(store, str(exported))
    assert from_folder.run_id == "clf" and from_folder.info.step == classifier.info.step
    assert predict_images(from_folder, photos) == predict_images(classifier, photos)
    result = cli("predict", str(exported), str(photos[0]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == predict_images(classifier, photos[:1])


def test_dit_folder_has_a_sample_grid_and_samples_as_the_run(
    generator, store, tmp_path, cli
) -> None:
    folder = tmp_path / "gen-export"
    export_hf(generator, None, folder)
    assert (folder / "samples.png").is_file()
    card = (folder / "README.md").read_text()
    assert "![samples](samples.png)" in card and NOT_EVALUATED in card
    assert "predicts the clean image" in card  # x-prediction, the DiT default
    config = json.loads((folder / "config.json").read_text())
    assert config["generation"]["null_class"] == 4 and config["model_args"]["width"] == 64

    reloaded = load_trained_model(store, str(folder))
    args = dict(
        per_class=2, steps=3, cfg_scale=2.0, sampler="euler", seed=3, device=reloaded.device
    )
    grids = [
        np.asarray(sample_grid(m.model, m.classes, [0, 1], **args)) for m in (generator, reloaded)
    ]
    assert np.array_equal(*grids)
    grid = tmp_path / "grid.png"
    args = ["sample", str(folder), "--breed", "00_circle_plain", "--n", "2", "--steps", "2"]
    result = cli(*args, "-o", str(grid))
    assert result.returncode == 0, result.stderr
    assert Image.open(grid).size[1] < 2 * 32  # one row: one breed


def test_export_refuses_a_foreign_folder_and_replaces_an_older_export(
    classifier, exported, tmp_path
) -> None:
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(StorageError, match="not empty and not a tinycats export"):
        export_hf(classifier, None, foreign)
    assert (foreign / "todo.txt").read_text() == "keep me"
    again = tmp_path / "again"
    export_hf(classifier, None, again)
    export_hf(classifier, None, again)  # over an older export: replaced whole
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in exported.iterdir())
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.trash-*"))


def test_a_tampered_export_is_one_clear_error(exported, store, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "README.md"):
        (broken / name).write_bytes((exported / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_trained_model(store, str(broken))


def test_push_sends_every_file_to_the_hub(exported, monkeypatch) -> None:
    import fake_hub
    from huggingface_hub import constants

    hub, server = fake_hub.start(token="hf_test_token")
    try:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # see fake_hub's docstring
        monkeypatch.setenv("HF_TOKEN", hub.token)
        url = push_to_hub(exported, "alice/tinycats-clf", private=True, message="from a test")
    finally:
        server.shutdown()
    assert url.startswith(f"{hub.url}/alice/tinycats-clf/commit/")
    repo = hub.repos["alice/tinycats-clf"]
    assert repo["private"] is True
    local = {p.name: p.read_bytes() for p in exported.iterdir()}
    assert repo["files"].keys() == local.keys()
    for name, data in local.items():
        assert hashlib.sha256(repo["files"][name]).digest() == hashlib.sha256(data).digest(), name
    committed = {line["key"]: [] for line in hub.commits[0]["lines"]}
    for line in hub.commits[0]["lines"]:
        committed[line["key"]].append(line["value"].get("path"))
    assert committed["lfsFile"] == ["model.safetensors"]  # weights as LFS, the rest inline
    assert sorted(committed["file"]) == ["README.md", "config.json"]
    assert hub.commits[0]["summary"] == "from a test"
    assert ("POST", "/api/validate-yaml") in hub.requests


def test_push_without_a_token_is_one_line_exit_2_before_any_work(
    exported, tmp_path, monkeypatch, cli
) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # nor a saved one
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # and never the real Hub
    target = tmp_path / "never-written"
    args = ["export", "hf", str(exported), "-o", str(target), "--push", "alice/x"]
    result = cli(*args, "--out", str(tmp_path))
    assert result.returncode == 2
    assert "no Hugging Face token" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_push_to_an_unreachable_hub_names_the_endpoint(exported, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_anything")
    with pytest.raises(HubError, match=r"cannot reach the Hugging Face Hub at http://127.0.0.1:9"):
        push_to_hub(exported, "alice/x", private=False, message="m")
