"""Ordinary actions that used to destroy saved work (issue 22), each against its fix.

Pruning past a corrupt newest checkpoint, resuming without the run record, readers that
disagreed on which checkpoint is usable, and a run record that claimed more than was
committed after a failed save.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from test_storage_checkpoint import Evil, save
from test_train_engine import committed_step, tiny_overrides
from tinycats.config import build_config
from tinycats.errors import StorageError
from tinycats.storage import (
    CheckpointManager,
    LocalStore,
    RunRegistry,
    checkpoint_files,
    load_checkpoint,
    resolve_checkpoint,
    verify_checkpoint,
)
from tinycats.storage.manifest import sha256_hex
from tinycats.train import run_training


def corrupt(step_dir: Path, name: str = "model.safetensors") -> None:
    data = bytearray((step_dir / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (step_dir / name).write_bytes(bytes(data))


def plant_unsafe_pickle(step_dir: Path, marker: Path) -> None:
    """A train_state.pt that pickles a call, with the manifest re-signed to match it."""
    torch.save({"payload": Evil(marker)}, step_dir / "train_state.pt")
    doc = json.loads((step_dir / "meta.json").read_text())
    data = (step_dir / "train_state.pt").read_bytes()
    doc["files"]["train_state.pt"] = {"sha256": sha256_hex(data), "size": len(data)}
    (step_dir / "meta.json").write_text(json.dumps(doc))


# -- retention counts only checkpoints that verify ------------------------------------------------


@pytest.mark.parametrize("damage", ["hash", "unsafe-pickle"])
def test_prune_with_a_corrupt_newest_keeps_the_newest_good_one(tmp_path: Path, cli, damage) -> None:
    store = LocalStore(tmp_path / "out")
    manager = CheckpointManager(store, "classifier", "r", keep_last=10)
    for step in (1, 2, 3):
        save(manager, step)
    newest = manager.run_dir / "step_00000003"
    if damage == "hash":
        corrupt(newest)
    else:
        plant_unsafe_pickle(newest, tmp_path / "pwned")
    result = cli(
        "ckpt", "prune", "r", "--keep-last", "1", "--keep-best", "0", "--out", str(store.root)
    )
    assert result.returncode == 0, result.stderr
    left = {i.step: i.path for i in manager.list()}
    assert 2 in left and verify_checkpoint(left[2]) == []  # the newest that verifies
    assert 1 not in left  # counted: one good checkpoint is all --keep-last 1 asks for
    loaded = manager.load_latest()
    assert loaded is not None and loaded.info.step == 2
    assert not (tmp_path / "pwned").exists()


def test_pruning_during_training_does_not_count_a_checkpoint_damaged_since_it_was_saved(
    tmp_path: Path,
) -> None:
    """The training run's own manager (which remembers what it wrote) notices a file
    changed on disk: the damaged step does not count among the newest two."""
    manager = CheckpointManager(LocalStore(tmp_path), "classifier", "r", keep_last=2)
    for step in (1, 2, 3):
        save(manager, step)
    assert [i.step for i in manager.list()] == [2, 3]
    corrupt(manager.run_dir / "step_00000003")
    save(manager, 4)  # its automatic prune
    assert [i.step for i in manager.list()] == [2, 4]  # two that resume, the damaged one gone
    assert all(verify_checkpoint(i.path) == [] for i in manager.list())


def test_a_run_none_of_whose_checkpoints_verifies_loses_nothing(tmp_path: Path) -> None:
    manager = CheckpointManager(LocalStore(tmp_path), "classifier", "r", keep_last=1)
    for step in (1, 2, 3):
        manager.keep_last = 10
        save(manager, step)
    for info in manager.list():
        corrupt(info.path)
    manager.keep_last = 1
    assert manager.prune() == []
    assert [i.step for i in manager.list()] == [1, 2, 3]


# -- every reader passes over the same damaged checkpoints ----------------------------------------


def test_predict_eval_and_resume_fall_back_past_the_same_damage(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "out")
    manager = CheckpointManager(store, "classifier", "r", keep_last=10)
    save(manager, 1)
    save(manager, 2)
    plant_unsafe_pickle(manager.run_dir / "step_00000002", tmp_path / "pwned")
    assert resolve_checkpoint(store, "r").name == "step_00000001"
    loaded = manager.load_latest()
    assert loaded is not None and loaded.info.step == 1
    assert not (tmp_path / "pwned").exists()


# -- a resume takes the config saved with its checkpoint ------------------------------------------


def train_cli(cli, out: Path, run_id: str, overrides: list[str], *flags: str):
    args = ["train", "classifier", "--run-id", run_id, "--out", str(out), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    return cli(*args, *flags)


def test_resume_without_the_run_record_continues_with_the_checkpoints_config(
    tmp_path: Path, cli
) -> None:
    out = tmp_path / "out"
    started = [*tiny_overrides(tmp_path, max_steps=4, every=4), "optim.lr=0.003"]
    assert train_cli(cli, out, "r", started).returncode == 0
    (out / "runs" / "r.json").unlink()  # lost, or unreadable: not the truth anyway
    result = train_cli(cli, out, "r", [], "--max-steps", "8")
    assert result.returncode == 0, result.stderr
    assert "resuming r" in result.stdout
    resumed = load_checkpoint(resolve_checkpoint(LocalStore(out), "r"))
    assert resumed.info.step == 8
    config = resumed.meta["config"]
    assert config["optim"]["lr"] == 0.003 and config["data"]["image_size"] == 32
    assert config["data"]["synthetic_classes"] == 4


def test_a_checkpoint_without_a_readable_config_is_a_clear_error(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    assert train_cli(cli, out, "r", tiny_overrides(tmp_path, max_steps=4, every=4)).returncode == 0
    [meta] = (out / "checkpoints").glob("classifier/*/r/step_00000004/meta.json")
    doc = json.loads(meta.read_text())
    del doc["meta"]["config"]
    meta.write_text(json.dumps(doc))
    result = train_cli(cli, out, "r", [], "--max-steps", "8")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "holds no readable run config" in line and str(meta) in line
    assert committed_step(out, "r") == 4  # nothing trained on today's defaults


# -- the run record says what was committed -------------------------------------------------------


def test_after_a_failed_save_the_record_names_the_committed_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "out")
    config = build_config("classifier", overrides=tiny_overrides(tmp_path, max_steps=20, every=5))
    real_write = checkpoint_files.write_file_synced

    def full_from_step_10(path: Path, data) -> None:
        if "step_00000010" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_files, "write_file_synced", full_from_step_10)
    with pytest.raises(StorageError, match="no space left on device"):
        run_training(config, store, "full", progress=False)
    record = RunRegistry(store).get("full")
    assert committed_step(store.root, "full") == 5
    assert record["status"] == "failed" and record["step"] == 5
    assert record["latest_checkpoint"].endswith("step_00000005")
    assert record["stopped_at_step"] >= 10
