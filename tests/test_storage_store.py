"""Atomic writes and the Store backends, with the fake volume's commit/reload discipline."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from fake_volume import FakeVolume
from tinycats.errors import StorageError
from tinycats.storage import (
    CheckpointManager,
    LocalStore,
    Store,
    VolumeStore,
    atomic,
    write_bytes_atomic,
    write_json_atomic,
)


def test_atomic_write_replaces_and_leaves_no_tmp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_full_disk_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.bin"
    write_bytes_atomic(target, b"old")

    def full(path: Path, data: bytes) -> None:
        path.write_bytes(data[:1])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_file_synced", full)
    with pytest.raises(StorageError, match=r"no space left on device writing .*a\.bin; free space"):
        write_bytes_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_other_os_errors_are_not_disguised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "missing-dir" / "a.bin", b"x")


def test_local_store_creates_root_and_satisfies_protocol(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "deep" / "root")
    assert store.root.is_dir() and isinstance(store, Store)
    store.commit()
    store.reload()


def save_tiny(manager: CheckpointManager, step: int) -> None:
    manager.save(step, {"model": {"w": torch.full((3,), float(step))}}, {"step": step}, {})


def test_second_container_sees_checkpoint_only_after_commit_and_reload(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    trainer, evaluator = vol.mount("trainer"), vol.mount("evaluator")
    writer_store = VolumeStore(trainer, trainer.path)
    reader_store = VolumeStore(evaluator, evaluator.path)
    writer = CheckpointManager(writer_store, "classifier", "r", run_date="2026-11-20")

    # Written but not committed: invisible everywhere else, even after a reload.
    writer.run_dir.mkdir(parents=True)
    (writer.run_dir / "notes.txt").write_text("uncommitted")
    evaluator.reload()
    assert CheckpointManager(reader_store, "classifier", "r").load_latest() is None
    trainer.commit()
    assert vol.committed_files()  # published...

    save_tiny(writer, 1)  # save() commits through the store
    assert trainer.commits == 2
    reader = CheckpointManager(reader_store, "classifier", "r", run_date="2026-11-21")
    assert reader.load_latest() is None  # ...but not visible before the reader reloads
    reader_store.reload()
    loaded = reader.load_latest()
    assert loaded is not None and loaded.info.step == 1

    # Deletions (pruning) are published too.
    writer.keep_last = 1
    save_tiny(writer, 2)
    reader_store.reload()
    assert [i.step for i in reader.list()] == [2]


def test_busy_reload_retried_after_handles_close(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    (box.path / "log.txt").write_text("hello")
    handle = box.open("log.txt")
    with pytest.raises(RuntimeError, match="open files preventing the operation"):
        box.reload()
    store = VolumeStore(box, box.path, close_handles=box.close_all, sleep=lambda s: None)
    store.reload()
    assert handle.closed and box.reloads == 1


def test_busy_reload_gives_up_with_the_fix(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    (box.path / "log.txt").write_text("hello")
    box.open("log.txt")
    slept: list[float] = []
    store = VolumeStore(box, box.path, max_attempts=3, backoff_seconds=0.5, sleep=slept.append)
    with pytest.raises(StorageError, match=r"stayed busy after 3 reload attempts.*close files"):
        store.reload()
    assert box.reloads == 0 and slept == [0.5, 1.0]
    box.close_all()


def test_other_reload_errors_propagate(tmp_path: Path) -> None:
    class Broken:
        def reload(self) -> None:
            raise RuntimeError("volume not found")

    with pytest.raises(RuntimeError, match="not found"):
        VolumeStore(Broken(), tmp_path).reload()


def test_fsync_dir_tolerates_filesystems_without_dir_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(atomic.os, "fsync", unsupported)
    atomic.fsync_dir(tmp_path)  # no error: the volume's commit() makes it durable instead
