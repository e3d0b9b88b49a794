"""`tinycats runs` and `tinycats ckpt`: listing, verifying, pruning, and clean failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinycats.config import build_config
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry


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


def test_runs_ls_and_show(out: Path, cli) -> None:
    result = cli("runs", "ls", "--out", str(out))
    assert result.returncode == 0, result.stdout
    assert "run-1" in result.stdout and "completed" in result.stdout
    assert "val_acc=0.9" in result.stdout
    records = json.loads(cli("runs", "ls", "--out", str(out), "--json").stdout)
    assert [r["run_id"] for r in records] == ["run-1"]
    shown = json.loads(cli("runs", "show", "run-1", "--out", str(out), "--json").stdout)
    assert shown["status"] == "completed" and shown["config"]["retention"]["keep_last"] == 10
    assert "attempts" in cli("runs", "show", "run-1", "--out", str(out)).stdout


def test_ckpt_ls_marks_latest_and_best(out: Path, cli) -> None:
    rows = json.loads(cli("ckpt", "ls", "--out", str(out), "--json").stdout)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    marks = {r["step"]: r["marks"] for r in rows}
    assert marks[6] == ["latest"] and marks[3] == ["best"] and marks[1] == []
    assert all(r["size_bytes"] > 0 for r in rows)
    table = cli("ckpt", "ls", "run-1", "--out", str(out))
    assert table.returncode == 0 and "latest" in table.stdout and "best" in table.stdout


def test_ckpt_verify_good(out: Path, cli) -> None:
    result = cli("ckpt", "verify", "--out", str(out), "--json")
    assert result.returncode == 0
    assert [r["problems"] for r in json.loads(result.stdout)] == [[]] * 6


def test_ckpt_prune_dry_run_then_real(out: Path, cli) -> None:
    args = ("ckpt", "prune", "run-1", "--out", str(out), "--keep-last", "2")
    plan = json.loads(cli(*args, "--dry-run", "--json").stdout)
    assert plan == [{"run_id": "run-1", "kept": [3, 5, 6], "deleted": [1, 2, 4], "dry_run": True}]
    steps = [r["step"] for r in json.loads(cli("ckpt", "ls", "--out", str(out), "--json").stdout)]
    assert steps == [1, 2, 3, 4, 5, 6]  # dry run deleted nothing
    result = cli(*args)
    assert result.returncode == 0
    assert "keeping steps 3, 5, 6; deleted 1, 2, 4" in result.stdout
    steps = [r["step"] for r in json.loads(cli("ckpt", "ls", "--out", str(out), "--json").stdout)]
    assert steps == [3, 5, 6]


def test_ckpt_prune_uses_saved_retention_and_rejects_bad_values(out: Path, cli) -> None:
    plan = json.loads(cli("ckpt", "prune", "--out", str(out), "--dry-run", "--json").stdout)
    assert plan[0]["deleted"] == []  # the run's own config keeps 10
    result = cli("ckpt", "prune", "--out", str(out), "--keep-last", "0")
    assert result.returncode == 2 and "retention.keep_last" in result.stderr


def test_unknown_run_is_a_user_error(out: Path, cli) -> None:
    result = cli("ckpt", "ls", "nope", "--out", str(out))
    assert result.returncode == 2 and "no checkpoints of run 'nope'" in result.stderr


def test_verify_tampered_exits_2_with_one_line(out: Path, cli) -> None:
    step_dir = next(out.glob("checkpoints/classifier/*/run-1/step_00000004"))
    data = bytearray((step_dir / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (step_dir / "model.safetensors").write_bytes(bytes(data))
    proc = cli("ckpt", "verify", "run-1", "--out", str(out))
    assert proc.returncode == 2
    error_lines = proc.stderr.strip().splitlines()
    assert len(error_lines) == 1
    assert "1 of 6 checkpoints failed verification" in error_lines[0]
    assert "model.safetensors: sha256 mismatch" in error_lines[0]
    assert "BAD" in proc.stdout and "step_00000004" in proc.stdout

    step_only = cli("ckpt", "verify", str(step_dir / ".." / "step_00000003"), "--out", str(out))
    assert step_only.returncode == 0
