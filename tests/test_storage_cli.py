"""`tinycats runs` and `tinycats ckpt`: listing, verifying, pruning, and clean failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tinycats.cli import app
from tinycats.config import build_config
from tinycats.errors import CheckpointError
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry

runner = CliRunner()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A store with one finished run of 6 checkpoints, all kept (keep_last=10)."""
    store = LocalStore(tmp_path / "out")
    config = build_config("classifier", overrides=["retention.keep_last=10"])
    RunRegistry(store).start("run-1", "classifier", config.to_dict())
    manager = CheckpointManager.from_config(store, "classifier", "run-1", config)
    for step, acc in enumerate([0.1, 0.5, 0.9, 0.2, 0.3, 0.4], start=1):
        manager.save(
            step, {"model": {"w": torch.full((4,), float(step))}}, {}, {}, {"val_acc": acc}
        )
    RunRegistry(store).finish("run-1", "completed", step=6, metrics={"val_acc": 0.9})
    return store.root


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=True)


def test_runs_ls_and_show(out: Path) -> None:
    result = invoke("runs", "ls", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "run-1" in result.output and "completed" in result.output
    assert "val_acc=0.9" in result.output
    records = json.loads(invoke("runs", "ls", "--out", str(out), "--json").output)
    assert [r["run_id"] for r in records] == ["run-1"]
    shown = json.loads(invoke("runs", "show", "run-1", "--out", str(out), "--json").output)
    assert shown["status"] == "completed" and shown["config"]["retention"]["keep_last"] == 10
    assert "attempts" in invoke("runs", "show", "run-1", "--out", str(out)).output


def test_ckpt_ls_marks_latest_and_best(out: Path) -> None:
    rows = json.loads(invoke("ckpt", "ls", "--out", str(out), "--json").output)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    marks = {r["step"]: r["marks"] for r in rows}
    assert marks[6] == ["latest"] and marks[3] == ["best"] and marks[1] == []
    assert all(r["size_bytes"] > 0 for r in rows)
    table = invoke("ckpt", "ls", "run-1", "--out", str(out))
    assert table.exit_code == 0 and "latest" in table.output and "best" in table.output


def test_ckpt_verify_good(out: Path) -> None:
    result = invoke("ckpt", "verify", "--out", str(out), "--json")
    assert result.exit_code == 0
    assert [r["problems"] for r in json.loads(result.output)] == [[]] * 6


def test_ckpt_prune_dry_run_then_real(out: Path) -> None:
    args = ("ckpt", "prune", "run-1", "--out", str(out), "--keep-last", "2")
    plan = json.loads(invoke(*args, "--dry-run", "--json").output)
    assert plan == [{"run_id": "run-1", "kept": [3, 5, 6], "deleted": [1, 2, 4], "dry_run": True}]
    steps = [
        r["step"] for r in json.loads(invoke("ckpt", "ls", "--out", str(out), "--json").output)
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # dry run deleted nothing
    result = invoke(*args)
    assert result.exit_code == 0
    assert "keeping steps 3, 5, 6; deleted 1, 2, 4" in result.output
    steps = [
        r["step"] for r in json.loads(invoke("ckpt", "ls", "--out", str(out), "--json").output)
    ]
    assert steps == [3, 5, 6]


def test_ckpt_prune_uses_saved_retention_and_rejects_bad_values(out: Path) -> None:
    plan = json.loads(invoke("ckpt", "prune", "--out", str(out), "--dry-run", "--json").output)
    assert plan[0]["deleted"] == []  # the run's own config keeps 10
    result = invoke("ckpt", "prune", "--out", str(out), "--keep-last", "0")
    assert result.exit_code != 0 and "retention.keep_last" in str(result.exception)


def test_unknown_run_is_a_user_error(out: Path) -> None:
    result = invoke("ckpt", "ls", "nope", "--out", str(out))
    assert isinstance(result.exception, CheckpointError)
    assert "no checkpoints of run 'nope'" in str(result.exception)


def test_verify_tampered_exits_2_with_one_line(out: Path) -> None:
    step_dir = next(out.glob("checkpoints/classifier/*/run-1/step_00000004"))
    data = bytearray((step_dir / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (step_dir / "model.safetensors").write_bytes(bytes(data))
    cli = [sys.executable, "-c", "from tinycats.cli import main; main()"]
    proc = subprocess.run(
        [*cli, "ckpt", "verify", "run-1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = proc.stderr.strip().splitlines()
    assert len(error_lines) == 1
    assert "1 of 6 checkpoints failed verification" in error_lines[0]
    assert "model.safetensors: sha256 mismatch" in error_lines[0]
    assert "BAD" in proc.stdout and "step_00000004" in proc.stdout

    step_only = invoke("ckpt", "verify", str(step_dir / ".." / "step_00000003"), "--out", str(out))
    assert step_only.exit_code == 0
