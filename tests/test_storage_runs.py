"""Run registry: one record per run, resumes counted, index derived, no lost concurrent records."""

from __future__ import annotations

import json
import multiprocessing
import re
from pathlib import Path

import pytest

from tinycats.errors import TinycatsError
from tinycats.storage import LocalStore, RunRegistry, new_run_id


def test_new_run_id_is_sortable_and_unique() -> None:
    ids = {new_run_id("classifier") for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"classifier-\d{8}-\d{6}-[0-9a-f]{4}", i) for i in ids)


def test_start_update_finish(tmp_path: Path) -> None:
    registry = RunRegistry(LocalStore(tmp_path))
    record = registry.start("r1", "dit", {"optim": {"lr": 0.1}})
    assert record["status"] == "running" and record["attempts"] == 1
    assert record["versions"]["torch"] and record["versions"]["python"] and record["host"]
    registry.update("r1", step=10, metrics={"val_loss": 0.5})
    registry.update("r1", metrics={"val_acc": 0.7}, best_checkpoint="step_00000010")
    record = registry.finish("r1", "completed", step=20)
    assert record["metrics"] == {"val_loss": 0.5, "val_acc": 0.7}  # merged, not replaced
    assert record["status"] == "completed" and record["step"] == 20 and record["ended_at"]
    on_disk = json.loads((tmp_path / "runs" / "r1.json").read_text())
    assert on_disk == registry.get("r1") and on_disk["config"] == {"optim": {"lr": 0.1}}
    index = json.loads((tmp_path / "metadata" / "training_runs.json").read_text())
    assert index["runs"][0]["status"] == "completed"
    assert "config" not in index["runs"][0]


def test_resume_counts_attempts_and_keeps_history(tmp_path: Path) -> None:
    registry = RunRegistry(LocalStore(tmp_path))
    first = registry.start("r1", "classifier", {})
    registry.finish("r1", "preempted", step=50)
    again = registry.start("r1", "classifier", {})
    assert again["attempts"] == 2 and again["status"] == "running"
    assert again["started_at"] == first["started_at"] and again["step"] == 50
    assert [h["status"] for h in again["history"]] == ["preempted"]
    assert "ended_at" not in again


def test_unknown_run_and_bad_status(tmp_path: Path) -> None:
    registry = RunRegistry(LocalStore(tmp_path))
    with pytest.raises(TinycatsError, match=r"unknown run 'nope'.*tinycats runs ls"):
        registry.get("nope")
    registry.start("r1", "classifier", {})
    with pytest.raises(TinycatsError, match="not final"):
        registry.finish("r1", "running")


def test_list_newest_first(tmp_path: Path) -> None:
    registry = RunRegistry(LocalStore(tmp_path))
    for run_id, started in [("a", "2026-01-02"), ("b", "2026-01-03"), ("c", "2026-01-01")]:
        registry.start(run_id, "classifier", {})
        registry.update(run_id, started_at=started)
    assert [r["run_id"] for r in registry.list()] == ["b", "a", "c"]


def register_and_finish(root: str, n: int) -> None:
    registry = RunRegistry(LocalStore(Path(root)))
    run_id = f"run-{n}"
    registry.start(run_id, "classifier", {"seed": n})
    for step in range(5):
        registry.update(run_id, step=step, metrics={"val_acc": step / 10})
    registry.finish(run_id, "completed")


def test_five_concurrent_processes_lose_no_record(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=register_and_finish, args=(str(tmp_path), n)) for n in range(5)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    registry = RunRegistry(LocalStore(tmp_path))
    records = {r["run_id"]: r for r in registry.list()}
    assert sorted(records) == [f"run-{n}" for n in range(5)]
    assert all(r["status"] == "completed" and r["step"] == 4 for r in records.values())
    index = json.loads((tmp_path / "metadata" / "training_runs.json").read_text())
    assert sorted(r["run_id"] for r in index["runs"]) == sorted(records)
    assert {r["status"] for r in index["runs"]} == {"completed"}
