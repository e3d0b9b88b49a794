"""The metrics log: appended, read past a torn line, cut back on resume; `runs show --metrics`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinycats.storage import LocalStore, RunRegistry
from tinycats.storage.metrics_log import MetricsLog
from tinycats.train.metrics import MetricsRecorder


def test_cut_after_keeps_covered_steps_and_drops_a_torn_tail(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "run" / "metrics.jsonl")
    log.append([{"step": s, "kind": "train", "loss": 1.0 / s} for s in (2, 4, 6, 8)])
    with open(log.path, "a") as handle:
        handle.write('{"step": 10, "kind": "tr')  # a kill in the middle of an append
    assert [x["step"] for x in log.read()] == [2, 4, 6, 8]
    assert log.cut_after(4) == 2
    assert [x["step"] for x in log.read()] == [2, 4]
    assert log.path.read_text().endswith("}\n")  # the torn tail is gone from the file
    log.append([{"step": 6, "kind": "train", "loss": 0.5}])
    assert [(x["step"], x["loss"]) for x in log.read()] == [(2, 0.5), (4, 0.25), (6, 0.5)]
    assert log.cut_after(0) == 3 and log.read() == []


def test_recorder_writes_a_line_per_window_only_when_flushed(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl")
    recorder = MetricsRecorder(lambda: log, log_every=3, max_steps=7, images_per_step=8)
    for step in range(1, 8):
        with recorder.timed("step_ms"), recorder.timed("data_ms"):
            pass
        recorder.step(step, torch.tensor(float(step)), 0.1, torch.tensor(2.0))
        if step == 3:
            recorder.evaluation(step, {"val_acc": 0.5})
    assert log.read() == []  # nothing before the checkpoint that covers it
    recorder.flush()
    lines = log.read()
    assert [(x["step"], x["kind"]) for x in lines] == [
        (3, "train"),
        (3, "eval"),
        (6, "train"),
        (7, "train"),  # the last step always gets its line
    ]
    assert [x["steps"] for x in lines if x["kind"] == "train"] == [3, 3, 1]
    assert lines[0]["loss"] == 3.0 and lines[0]["grad_norm"] == 2.0 and lines[1]["val_acc"] == 0.5
    assert all(x["data_ms"] <= x["step_ms"] for x in lines if x["kind"] == "train")


@pytest.fixture
def run_with_log(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    RunRegistry(LocalStore(out)).start("r1", "classifier", {})
    log = MetricsLog(out / "checkpoints" / "classifier" / "2026-01-01" / "r1" / "metrics.jsonl")
    log.append(
        [
            {"step": 10, "kind": "train", "loss": 1.25, "lr": 0.001, "img_per_s": 80.0},
            {"step": 10, "kind": "eval", "val_acc": 0.625},
        ]
    )
    return out


def test_runs_show_metrics_prints_the_log(run_with_log: Path, cli) -> None:
    shown = cli("runs", "show", "r1", "--metrics", "--json", "--out", str(run_with_log))
    assert shown.returncode == 0, shown.stderr
    assert [(x["step"], x["kind"]) for x in json.loads(shown.stdout)] == [
        (10, "train"),
        (10, "eval"),
    ]
    table = cli("runs", "show", "r1", "--metrics", "--out", str(run_with_log))
    assert table.returncode == 0 and "1.25" in table.stdout and "0.625" in table.stdout


def test_runs_show_metrics_of_a_run_without_lines_is_one_line(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    RunRegistry(LocalStore(out)).start("empty", "classifier", {})
    shown = cli("runs", "show", "empty", "--metrics", "--out", str(out))
    assert shown.returncode == 2
    assert shown.stderr.count("\n") == 1 and "no metrics yet" in shown.stderr
