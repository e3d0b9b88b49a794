"""TensorBoard and MLflow, read back with their own readers after a SIGKILL and a resume."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_engine import committed_step, spawn, tiny_overrides, train_args, wait_for
from tinycats.config import build_config
from tinycats.errors import ConfigError
from tinycats.storage import LocalStore, RunRegistry
from tinycats.train.run import build_trainer

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def test_every_step_exactly_once_after_sigkill_and_resume(tmp_path: Path, monkeypatch) -> None:
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    overrides = [
        *tiny_overrides(tmp_path, max_steps=16, every=4),
        "tracking.log_every=2",
        "tracking.tensorboard=true",
        "tracking.mlflow=true",
    ]
    proc = spawn(*train_args("tracked", overrides), out=out)
    wait_for(lambda: committed_step(out, "tracked") >= 4 or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert 4 <= committed_step(out, "tracked") < 16, "the kill came too late to test resume"
    resumed = spawn(*train_args("tracked", overrides), out=out)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err

    record = RunRegistry(LocalStore(out)).get("tracked")
    assert record["status"] == "completed" and record["attempts"] == 2
    train_steps, eval_steps = list(range(2, 17, 2)), list(range(4, 17, 4))

    events = EventAccumulator(str(out / "tensorboard" / "tracked"))
    events.Reload()  # applies the resumed writer's purge to the killed one's files
    assert [e.step for e in events.Scalars("train/loss")] == train_steps
    assert [e.step for e in events.Scalars("eval/val_acc")] == eval_steps

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(record["mlflow_run_id"])  # one MLflow run across both attempts
    assert run.info.status == "FINISHED" and run.data.params["optim.max_steps"] == "16"
    for key, steps in (("train/loss", train_steps), ("eval/val_acc", eval_steps)):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == steps, key
    # `tinycats eval` adds its figures and confusion matrix to both, at its checkpoint's step
    evaluated = subprocess.run(
        [sys.executable, "-m", "tinycats", "eval", "tracked", "--split", "test", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    [artifact] = client.list_artifacts(run.info.run_id, "eval/test")
    assert artifact.path == "eval/test/confusion_test.png"
    evaluation = RunRegistry(LocalStore(out)).get("tracked")["eval"]["test"]  # the best step's
    top1 = client.get_metric_history(run.info.run_id, "test/top1")
    assert [(m.step, m.value) for m in top1] == [(evaluation["step"], evaluation["top1"])]
    events = EventAccumulator(str(out / "tensorboard" / "tracked"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("test/confusion")] == [evaluation["step"]]
    assert [e.step for e in events.Scalars("train/loss")] == train_steps  # still once each
    log = (out / "checkpoints" / "classifier").glob("*/tracked/metrics.jsonl")
    lines = [json.loads(x) for x in next(log).read_text().splitlines()]
    by_step = {x["step"]: x["loss"] for x in lines if x["kind"] == "train"}
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert {m.step: m.value for m in history} == pytest.approx(by_step)  # the log's values


def test_a_tracker_without_its_library_stops_before_any_work(tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    config = build_config(
        "classifier",
        overrides=[*tiny_overrides(tmp_path, 4, 4), "tracking.mlflow=true"],
    )
    with pytest.raises(ConfigError) as err:
        build_trainer(config, LocalStore(tmp_path / "out"), "r", progress=False)
    assert "pip install 'tinycats[tracking]'" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing prepared, nothing written


def test_tensorboard_events_are_committed_with_the_checkpoints_on_a_volume(tmp_path) -> None:
    """A Modal commit is refused while a file under the mount is open: the event writer
    is closed before each checkpoint's commit, and the events are in that commit."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fake_volume import FakeVolume
    from test_cloud_retries import TINY as CLOUD_TINY
    from tinycats.config import apply_overrides
    from tinycats.storage import VolumeStore

    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("trainer")
    layer = apply_overrides(
        {"task": "dit"},
        [*CLOUD_TINY, "optim.max_steps=8", "dit.preview_per_class=1", "tracking.tensorboard=true"],
    )
    layer["data"]["dir"] = str(tmp_path / "data")
    config = build_config("dit", base=layer)
    build_trainer(config, VolumeStore(box, box.path), "r", progress=False).fit()
    assert box.open_files == []
    events = EventAccumulator(str(vol.backing / "tensorboard" / "r"), size_guidance={"images": 0})
    events.Reload()  # what another container sees: the committed files
    assert [e.step for e in events.Scalars("eval/val_loss")] == [4, 8]
    assert [e.step for e in events.Images("preview")] == [4, 8]
