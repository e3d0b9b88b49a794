"""Checkpoints: the save protocol, fallback loading past damage, safe decoding, full disks."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tinycats.errors import CheckpointError, StorageError
from tinycats.storage import (
    CheckpointManager,
    LocalStore,
    checkpoint_files,
    find_run_dir,
    load_checkpoint,
    resolve_checkpoint,
    verify_checkpoint,
)
from tinycats.storage import checkpoint as checkpoint_module
from tinycats.storage.manifest import sha256_hex


def weights_for(step: int) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(step)
    return {
        "model": {"w": torch.randn(8, 4, generator=gen), "b": torch.full((4,), float(step))},
        "ema": {"w": torch.randn(8, 4, generator=gen)},
    }


def save(manager: CheckpointManager, step: int, metric: float | None = None):
    metrics = {} if metric is None else {"val_acc": metric}
    state = {"step": step, "optimizer": {"m": torch.ones(3) * step}, "rng": [1, 2, 3]}
    return manager.save(step, weights_for(step), state, {"config": {"lr": 0.1}}, metrics)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "out")


@pytest.fixture
def manager(store: LocalStore) -> CheckpointManager:
    return CheckpointManager(store, "classifier", "run-a", keep_last=3, run_date="2026-11-23")


def test_save_and_load_roundtrip(manager: CheckpointManager) -> None:
    info = save(manager, 7, 0.5)
    assert info.path == manager.run_dir / "step_00000007"
    assert manager.run_dir.parts[-4:] == ("checkpoints", "classifier", "2026-11-23", "run-a")
    assert sorted(p.name for p in info.path.iterdir()) == [
        "ema.safetensors",
        "meta.json",
        "model.safetensors",
        "train_state.pt",
    ]
    loaded = manager.load_latest()
    assert loaded is not None and loaded.skipped == []
    assert loaded.info.step == 7 and loaded.info.metrics == {"val_acc": 0.5}
    assert loaded.info.run_id == "run-a" and loaded.info.task == "classifier"
    torch.testing.assert_close(loaded.weights["model"]["w"], weights_for(7)["model"]["w"])
    torch.testing.assert_close(loaded.train_state["optimizer"]["m"], torch.full((3,), 7.0))
    assert loaded.train_state["rng"] == [1, 2, 3]
    assert loaded.meta == {"config": {"lr": 0.1}}
    doc = json.loads((info.path / "meta.json").read_text())
    assert doc["format_version"] == 1 and doc["step"] == 7
    assert doc["files"]["train_state.pt"]["size"] == (info.path / "train_state.pt").stat().st_size
    latest = json.loads((manager.run_dir / "latest.json").read_text())
    assert latest["step"] == 7 and latest["dir"] == "step_00000007"


def test_empty_run_loads_none(manager: CheckpointManager) -> None:
    assert manager.load_latest() is None
    assert manager.latest() is None and manager.best() is None and manager.list() == []


def test_shared_noncontiguous_and_tied_tensors_are_saved(manager: CheckpointManager) -> None:
    base = torch.arange(12.0).reshape(3, 4)
    weights = {"model": {"a": base, "tied": base, "t": base.t(), "row": base[1], "empty": base[:0]}}
    manager.save(1, weights, {}, {})
    loaded = manager.load_latest()
    assert loaded is not None
    got = loaded.weights["model"]
    torch.testing.assert_close(got["tied"], base)
    torch.testing.assert_close(got["t"], base.t().contiguous())
    torch.testing.assert_close(got["row"], base[1])
    assert got["empty"].shape == (0, 4)


def test_non_tensor_weight_is_refused_and_leaves_nothing(manager: CheckpointManager) -> None:
    with pytest.raises(TypeError, match="weights hold tensors only"):
        manager.save(1, {"model": {"w": [1.0]}}, {}, {})  # type: ignore[dict-item]
    assert not any(manager.run_dir.iterdir())


def test_list_sorts_by_parsed_step_and_ignores_tmp(manager: CheckpointManager) -> None:
    manager.keep_last = 10
    for step in (9, 100, 10):
        save(manager, step)
    (manager.run_dir / "step_00000200.tmp-deadbeef").mkdir()  # a crashed writer's leftover
    assert [i.step for i in manager.list()] == [9, 10, 100]
    assert manager.latest().step == 10  # latest.json, not the highest number, decides


def test_index_cache_is_not_the_truth(manager: CheckpointManager) -> None:
    save(manager, 1, 0.1)
    save(manager, 2, 0.2)
    (manager.run_dir / "index.json").unlink()  # lost cache: manifests are read instead
    assert [(i.step, i.metrics["val_acc"]) for i in manager.list()] == [(1, 0.1), (2, 0.2)]
    save(manager, 3, 0.3)  # the writer's prune rewrites the whole index
    assert sorted(json.loads((manager.run_dir / "index.json").read_text())["checkpoints"]) == [
        "1",
        "2",
        "3",
    ]
    shutil.rmtree(manager.run_dir / "step_00000003")  # cached, but the folder is gone
    assert [i.step for i in manager.list()] == [1, 2]
    (manager.run_dir / "step_00000002" / "meta.json").unlink()  # cached, manifest gone
    listed = manager.list()
    assert [(i.step, i.metrics) for i in listed] == [(1, {"val_acc": 0.1}), (2, {})]
    assert manager.best().step == 1


def rewrite_index_entry(manager: CheckpointManager, step: int, **changes) -> None:
    """Edit one cached entry by hand, keeping everything else (its inode too)."""
    path = manager.run_dir / "index.json"
    doc = json.loads(path.read_text())
    doc["checkpoints"][str(step)].update(changes)
    path.write_text(json.dumps(doc))


def test_index_entry_of_a_replaced_folder_is_ignored(manager: CheckpointManager) -> None:
    save(manager, 1, 0.1)
    save(manager, 2, 0.2)
    # Step 2 restored from elsewhere (a backup, another container's copy): same name,
    # another folder, another manifest. Its cached entry describes the old folder.
    other = CheckpointManager(LocalStore(manager.store.root.parent / "other"), "classifier", "x")
    restored = save(other, 2, 0.9).path
    shutil.rmtree(manager.run_dir / "step_00000002")
    shutil.copytree(restored, manager.run_dir / "step_00000002")
    assert [(i.step, i.metrics["val_acc"]) for i in manager.list()] == [(1, 0.1), (2, 0.9)]
    assert manager.best().step == 2


@pytest.mark.parametrize("keep_best", [0, 1])
def test_a_wrong_index_entry_cannot_mislead_best_resolve_or_prune(
    store: LocalStore, keep_best: int
) -> None:
    manager = CheckpointManager(store, "classifier", "r", keep_last=10, keep_best=keep_best)
    for step, metric in [(1, 0.2), (2, 0.9), (3, 0.4), (4, 0.3)]:
        save(manager, step, metric)
    # The cache claims step 1 is the best and step 2 the worst; the manifests disagree.
    rewrite_index_entry(manager, 1, metrics={"val_acc": 0.99})
    rewrite_index_entry(manager, 2, metrics={"val_acc": 0.01})
    assert manager.best().step == 2
    assert resolve_checkpoint(store, "r", "best") == manager.run_dir / "step_00000002"
    rewrite_index_entry(manager, 1, metrics={"val_acc": 0.99})  # best() rebuilt the index
    rewrite_index_entry(manager, 2, metrics={"val_acc": 0.01})
    manager.keep_last = 1
    kept = {i.step for i in manager.plan_prune()[0]}
    assert kept == ({2, 4} if keep_best else {4})
    manager.prune()  # confirms what it deletes: step 2 is the real best
    assert [i.step for i in manager.list()] == ([2, 4] if keep_best else [4])
    index = json.loads((manager.run_dir / "index.json").read_text())["checkpoints"]
    assert {k: v["metrics"]["val_acc"] for k, v in index.items()} == (
        {"2": 0.9, "4": 0.3} if keep_best else {"4": 0.3}
    )


def test_resave_same_step_replaces_it(manager: CheckpointManager) -> None:
    save(manager, 5, 0.1)
    manager.save(5, {"model": {"w": torch.zeros(2)}}, {"v": 2}, {})
    loaded = manager.load_latest()
    assert loaded is not None and loaded.train_state == {"v": 2}
    assert [p.name for p in manager.run_dir.iterdir() if "step_" in p.name] == ["step_00000005"]


def test_resume_on_another_day_reuses_the_run_folder(store: LocalStore) -> None:
    first = CheckpointManager(store, "dit", "run-b", run_date="2026-11-23")
    save(first, 1)
    later = CheckpointManager(store, "dit", "run-b", run_date="2026-11-24")
    assert later.run_dir == first.run_dir
    assert find_run_dir(store, "run-b") == first.run_dir
    assert find_run_dir(store, "run-b", task="classifier") is None


@pytest.mark.parametrize("name", ["../x", "a/b", "", "."])
def test_unsafe_run_ids_are_refused(store: LocalStore, name: str) -> None:
    with pytest.raises(CheckpointError, match="invalid run id"):
        CheckpointManager(store, "classifier", name)


def test_best_uses_metric_and_mode(store: LocalStore) -> None:
    manager = CheckpointManager(store, "dit", "r", keep_last=10, best_metric="val_acc")
    for step, metric in [(1, 0.3), (2, 0.9), (3, None), (4, 0.5)]:
        save(manager, step, metric)
    assert manager.best().step == 2
    manager.best_mode = "min"
    assert manager.best().step == 1


# -- damage is detected and skipped --------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "file", "reason"),
    [
        (truncate, "model.safetensors", "size mismatch"),
        (flip_byte, "train_state.pt", "sha256 mismatch"),
        (flip_byte, "ema.safetensors", "sha256 mismatch"),
        (delete, "model.safetensors", "missing"),
        (delete, "meta.json", "meta.json: missing"),
    ],
)
def test_damaged_latest_falls_back_to_previous(
    manager: CheckpointManager, damage, file: str, reason: str
) -> None:
    save(manager, 1)
    save(manager, 2)
    newest = manager.run_dir / "step_00000002"
    damage(newest / file)
    loaded = manager.load_latest()
    assert loaded is not None and loaded.info.step == 1
    assert [path for path, _ in loaded.skipped] == [newest]
    assert str(newest / file) in loaded.skipped[0][1] and reason in loaded.skipped[0][1]
    problems = verify_checkpoint(newest)
    assert len(problems) == 1 and reason in problems[0]
    with pytest.raises(CheckpointError, match=reason):
        load_checkpoint(newest)
    assert resolve_checkpoint(manager.store, "run-a") == manager.run_dir / "step_00000001"


def test_all_damaged_raises_with_fix(manager: CheckpointManager) -> None:
    save(manager, 1)
    flip_byte(manager.run_dir / "step_00000001" / "model.safetensors")
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints of run run-a verifies"):
        manager.load_latest()
    with pytest.raises(CheckpointError, match="tinycats ckpt verify"):
        resolve_checkpoint(manager.store, "run-a")


class Evil:
    """Pickles as a call to os.system: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_callable_is_refused_without_running(
    manager: CheckpointManager, tmp_path: Path
) -> None:
    save(manager, 1)
    save(manager, 2)
    step_dir = manager.run_dir / "step_00000002"
    marker = tmp_path / "pwned"
    torch.save({"payload": Evil(marker)}, step_dir / "train_state.pt")
    # Re-sign the manifest so the hashes match: only weights_only loading stands in the way.
    meta_path = step_dir / "meta.json"
    doc = json.loads(meta_path.read_text())
    data = (step_dir / "train_state.pt").read_bytes()
    doc["files"]["train_state.pt"] = {"sha256": sha256_hex(data), "size": len(data)}
    meta_path.write_text(json.dumps(doc))

    with pytest.raises(CheckpointError, match="unsafe pickle"):
        load_checkpoint(step_dir)
    loaded = manager.load_latest()
    assert loaded is not None and loaded.info.step == 1
    assert "unsafe pickle" in loaded.skipped[0][1]
    assert any("unsafe pickle" in p for p in verify_checkpoint(step_dir))
    assert not marker.exists()


# -- full disk ------------------------------------------------------------------------------------


def test_full_disk_leaves_previous_checkpoints_intact(
    manager: CheckpointManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(manager, 1)
    real_write = checkpoint_files.write_file_synced

    def write_until_full(path: Path, data) -> None:
        if path.name == "train_state.pt":
            with open(path, "xb") as f:
                f.write(bytes(data)[:10])  # a partial file, as a real full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(checkpoint_files, "write_file_synced", write_until_full)
    with pytest.raises(StorageError, match=r"no space left on device writing .*step_00000002"):
        save(manager, 2)
    assert sorted(p.name for p in manager.run_dir.iterdir()) == [
        "index.json",
        "latest.json",
        "step_00000001",
    ]
    loaded = manager.load_latest()
    assert loaded is not None and loaded.info.step == 1 and loaded.skipped == []


# -- resolving references -------------------------------------------------------------------------


def test_resolve_by_run_id_run_dir_and_step_dir(store: LocalStore) -> None:
    manager = CheckpointManager(store, "classifier", "run-c", keep_last=5)
    for step, metric in [(1, 0.2), (2, 0.8), (3, 0.4)]:
        save(manager, step, metric)
    step2 = manager.run_dir / "step_00000002"
    assert resolve_checkpoint(store, "run-c") == manager.run_dir / "step_00000003"
    assert resolve_checkpoint(store, "run-c", "best") == step2
    assert resolve_checkpoint(store, str(manager.run_dir), "best") == step2
    assert resolve_checkpoint(store, str(step2)) == step2
    with pytest.raises(CheckpointError, match="no run or checkpoint folder 'nope'"):
        resolve_checkpoint(store, "nope")
    with pytest.raises(CheckpointError, match="choose latest or best"):
        resolve_checkpoint(store, "run-c", "oldest")


def test_from_config_takes_retention_and_metric(store: LocalStore) -> None:
    from tinycats.config import build_config

    config = build_config("dit", overrides=["retention.keep_last=2", "retention.keep_every=10"])
    manager = CheckpointManager.from_config(store, "dit", "run-d", config)
    assert (manager.keep_last, manager.keep_best, manager.keep_every) == (2, 1, 10)
    assert (manager.best_metric, manager.best_mode) == ("val_loss", "min")


def test_failed_rename_on_resave_puts_the_old_checkpoint_back(
    manager: CheckpointManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(manager, 5, 0.1)
    real_rename = os.rename

    def failing_rename(src, dst) -> None:
        if ".tmp-" in str(src):
            raise OSError(errno.EIO, "I/O error")
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "rename", failing_rename)
    with pytest.raises(OSError, match="I/O error"):
        manager.save(5, {"model": {"w": torch.zeros(2)}}, {"v": 2}, {})
    monkeypatch.undo()
    loaded = manager.load_latest()
    assert loaded is not None and loaded.train_state["step"] == 5 and loaded.skipped == []
    assert sorted(p.name for p in manager.run_dir.iterdir() if "step_" in p.name) == [
        "step_00000005"
    ]
