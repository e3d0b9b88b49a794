"""`tinycats quickstart` with tiny recipes: synthetic fallback said out loud, a stop that
leaves resumable runs, a rerun that resumes instead of redoing, the closing table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import test_report
from tinycats.cli import app
from tinycats.cli import quickstart as qs
from tinycats.config import build_config
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry
from tinycats.train import preemption

TINY = [*test_report.TINY, "optim.max_steps=6"]


@pytest.fixture
def tiny(monkeypatch, tmp_path) -> Path:
    monkeypatch.setitem(qs.RECIPES, "classifier", TINY)
    monkeypatch.setitem(
        qs.RECIPES,
        "dit",
        [*TINY, "dit.width=32", "dit.depth=1", "dit.heads=2", "dit.sample_steps=2"],
    )
    monkeypatch.setattr(qs, "SHARED_PHOTOS", tmp_path / "no-photos-here")
    monkeypatch.setattr(qs, "GRID_PER_CLASS", 1)
    monkeypatch.setenv("COLUMNS", "400")  # whole paths on one line each
    return tmp_path / "out"


def quickstart(out: Path):
    return CliRunner().invoke(app, ["quickstart", "--out", str(out)], catch_exceptions=False)


def test_ctrl_c_stops_resumably_and_a_rerun_resumes(tiny, monkeypatch) -> None:
    polls = {"n": 0}
    real = preemption.PreemptionGuard.requested

    def ctrl_c_at_step_4(self) -> bool:  # the loop polls once per step
        polls["n"] += 1
        if polls["n"] == 4:
            self.request("SIGINT")
        return real.fget(self)

    monkeypatch.setattr(preemption.PreemptionGuard, "requested", property(ctrl_c_at_step_4))
    stopped = quickstart(tiny)
    assert stopped.exit_code == 130, stopped.output
    assert (
        "synthetic images" in stopped.output and "run `tinycats quickstart` again" in stopped.output
    )
    record = RunRegistry(LocalStore(tiny)).get(qs.CLASSIFIER_RUN)
    assert (record["status"], record["step"]) == ("preempted", 4)

    monkeypatch.setattr(preemption.PreemptionGuard, "requested", real)
    done = quickstart(tiny)
    assert done.exit_code == 0, done.output
    assert f"{qs.CLASSIFIER_RUN}: resuming" in done.output
    store = LocalStore(tiny)
    record = RunRegistry(store).get(qs.CLASSIFIER_RUN)
    assert (record["status"], record["step"], record["attempts"]) == ("completed", 6, 2)
    best = CheckpointManager.from_config(
        store, "classifier", qs.CLASSIFIER_RUN, build_config("classifier", overrides=TINY)
    ).best()
    assert record["eval"]["test"]["step"] == best.step  # the best checkpoint, as `eval`
    made = {
        "report": tiny / "reports" / qs.CLASSIFIER_RUN / "report.html",
        "dit report": tiny / "reports" / qs.DIT_RUN / "report.html",
        "grid": tiny / "samples" / qs.DIT_RUN / "quickstart-grid.png",
        "eval": tiny / "reports" / qs.CLASSIFIER_RUN / "eval_test.json",
    }
    for path in made.values():
        assert path.is_file() and str(path) in done.output.replace("\n", "")
    assert "next:" in done.output and "tinycats predict" in done.output
    log = next((tiny / "checkpoints" / "classifier").glob(f"*/{qs.CLASSIFIER_RUN}/metrics.jsonl"))
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert steps == [2, 3, 4, 6, 6]  # train 2, eval 3, train 4 (the stop), train 6, eval 6

    again = quickstart(tiny)  # nothing left to train: both runs are skipped
    assert again.exit_code == 0, again.output
    assert again.output.count("done already") == 2
    assert RunRegistry(store).get(qs.CLASSIFIER_RUN)["attempts"] == 2


def test_a_data_folder_that_does_not_exist_is_one_line(tiny, tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["quickstart", "--out", str(tiny), "--data", str(tmp_path / "nope")]
    )
    assert result.exit_code != 0
    assert "is not a folder" in str(result.exception) or "is not a folder" in result.output
