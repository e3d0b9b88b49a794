"""`tinycats report`: one self-contained page, checked in Chromium against the run record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tinycats.config import build_config
from tinycats.errors import TinycatsError
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry
from tinycats.storage.retention import CheckpointRecord, keep_reasons
from tinycats.train import run_training
from tinycats.train.evaluation import evaluate_classifier
from tinycats.train.inference import load_trained_model

TINY = [
    "data.image_size=16",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=8",
    "optim.batch_size=8",
    "optim.warmup_steps=1",
    "checkpoint.every_steps=3",
    "tracking.log_every=2",
    "retention.keep_last=1",
]


@pytest.fixture(scope="module")
def store(module_tmp: Path) -> LocalStore:
    """Two tiny classifier runs (one evaluated on test) and a tiny DiT with preview grids."""
    store = LocalStore(module_tmp / "out")
    for run_id, steps in (("clf", 6), ("clf2", 4)):
        config = build_config("classifier", overrides=[*TINY, f"optim.max_steps={steps}"])
        run_training(config, store, run_id, progress=False)
    evaluate_classifier(load_trained_model(store, "clf"), store, split="test")
    dit = build_config(
        "dit",
        overrides=[
            *TINY,
            "optim.max_steps=6",
            "dit.width=32",
            "dit.depth=1",
            "dit.heads=2",
            "dit.preview_per_class=1",
            "dit.sample_steps=2",
        ],
    )
    run_training(dit, store, "gen", progress=False)
    return store


def test_report_in_chromium_shows_the_records_figures(store, browser, tmp_path, cli) -> None:
    out = tmp_path / "clf.html"
    done = cli("report", "clf", "--compare", "clf2", "-o", str(out), "--out", str(store.root))
    assert done.returncode == 0, done.stderr
    page_html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page_html)  # nothing fetched
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert len(widths) >= 8 and all(w > 0 for w in widths), widths  # every image decoded
    shown = dict(
        page.eval_on_selector_all(
            "[data-figure]",
            "els => els.map(e => [e.dataset.figure, [e.dataset.value, e.textContent]])",
        )
    )
    page.close()
    assert errors == []
    record = RunRegistry(store).get("clf")
    expected = {
        "status": record["status"],
        "step": record["step"],
        "attempts": record["attempts"],
        "device": "cpu",  # recorded with each checkpoint
        **{f"metrics.{k}": v for k, v in record["metrics"].items()},
        **{f"eval.test.{k}": record["eval"]["test"][k] for k in ("top1", "top3", "n", "step")},
    }
    for name, value in expected.items():
        assert json.loads(shown[name][0]) == value, name
    top1 = record["eval"]["test"]["top1"]
    assert shown["eval.test.top1"][1] == f"{100 * top1:.1f}%"
    steps = [i.step for i in CheckpointManager(store, "classifier", "clf").list()]
    assert sorted(int(k.split(".")[1]) for k in shown if k.startswith("checkpoint.")) == steps
    assert "Compared runs" in page_html and "clf2" in page_html


def test_a_dit_report_embeds_every_preview_grid(store, tmp_path) -> None:
    from tinycats.report import write_report

    path = write_report(store, "gen", out=tmp_path / "gen.html")
    text = path.read_text()
    for step in (3, 6):  # a grid at each checkpoint
        assert f'alt="preview grid at step {step}"' in text
    assert "Latest (step 6)" in text and "val_loss curve" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nope"], "unknown run 'nope'"),
        (["report", "empty"], "no metrics yet"),
        (["report", "clf", "-o", "/proc/report.html"], "pass -o with a writable path"),
        (["report", "clf", "--compare", "nope"], "unknown run 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store, args, message, cli) -> None:
    RunRegistry(store).start("empty", "classifier", build_config("classifier").to_dict())
    done = cli(*args, "--out", str(store.root))
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_keep_reasons_name_every_rule_that_keeps_a_step() -> None:
    records = [CheckpointRecord(s, float(s), m) for s, m in ((10, 0.5), (20, 0.9), (30, 0.7))]
    records.append(CheckpointRecord(40, 40.0, None, committed=False))
    reasons = keep_reasons(records, keep_last=1, keep_best=1, keep_every=20, latest_step=30)
    assert reasons == {
        20: ["best 1", "every 20"],
        30: ["last 1", "latest"],
        40: ["in progress"],
    }


def test_cloud_report_downloads_all_but_the_weights(store, tmp_path, monkeypatch) -> None:
    from test_cloud_app import SdkVolume
    from tinycats.cloud.remote_volume import RemoteVolume
    from tinycats.cloud.report import cloud_report

    fetched: list[str] = []
    remote = RemoteVolume(SdkVolume(store.root), "tinycats-outputs")
    original = remote.get
    monkeypatch.setattr(remote, "get", lambda p, d: fetched.append(p) or original(p, d))
    path = cloud_report(remote, "clf", ["clf2"], tmp_path / "clf.html")
    assert not [p for p in fetched if p.endswith((".safetensors", ".pt"))]
    assert any(p.endswith("/clf/metrics.jsonl") for p in fetched)
    text = path.read_text()
    record = RunRegistry(store).get("clf")
    top1 = record["eval"]["test"]["top1"]
    assert f'data-figure="eval.test.top1" data-value="{top1}"' in text
    assert "confusion" in text and "Compared runs" in text
    with pytest.raises(TinycatsError, match="unknown run 'nope' on volume tinycats-outputs"):
        cloud_report(remote, "nope", None, tmp_path / "nope.html")
