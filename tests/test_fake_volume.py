"""The fake volume keeps the pinned client's contract, and our Store survives it.

The contract (see fake_volume.py for the client code each rule is read from): commit
publishes and then reloads; a reload is refused while files under the mount are open
or mapped; background commits publish at any moment; the volume is committed when a
container exits, and not when it is killed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fake_volume import ContainerKilled, FakeVolume
from tinycats.config import build_config
from tinycats.data import ShardDataset, close_open_shards, prepare_dataset
from tinycats.errors import StorageError
from tinycats.storage import VolumeStore


def test_commit_also_reloads(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    a, b = vol.mount("a"), vol.mount("b")
    (a.path / "from_a.txt").write_text("a")
    a.commit()
    (b.path / "from_b.txt").write_text("b")
    b.commit()  # publishes b's file and brings in a's, without a reload
    assert (b.path / "from_a.txt").read_text() == "a"
    assert b.reloads == 0 and vol.committed_files() == ["from_a.txt", "from_b.txt"]


def test_commit_with_an_open_file_publishes_then_is_refused(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    handle = (box.path / "log.txt").open("w")  # any open(), not only the fake's helper
    handle.write("x")
    handle.flush()
    with pytest.raises(RuntimeError, match=r"open files preventing the operation: path log\.txt"):
        box.commit()
    assert vol.committed_files() == ["log.txt"]  # VolumeCommit ran before the reload failed
    handle.close()
    box.commit()


def test_a_memory_mapped_file_blocks_a_reload(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    np.save(box.path / "shard.npy", np.zeros(8, dtype=np.uint8))
    mapped = np.load(box.path / "shard.npy", mmap_mode="r")
    with pytest.raises(RuntimeError, match=r"shard\.npy is open"):
        box.reload()
    del mapped
    box.reload()


def test_reload_publishes_uncommitted_changes_instead_of_dropping_them(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    (box.path / "f").write_text("x")
    box.reload()
    assert (box.path / "f").read_text() == "x" and vol.committed_files() == ["f"]


def test_background_commits_publish_without_a_commit(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol", background_every=1)
    box = vol.mount("c")
    (box.path / "first.txt").write_text("1")  # published when the next file is opened
    (box.path / "second.txt").write_text("2")
    assert "first.txt" in vol.committed_files() and box.commits == 0


def test_exit_commits_and_kill_does_not(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    with pytest.raises(ValueError), vol.container("crashes") as box:
        (box.path / "partial.txt").write_text("p")
        raise ValueError("a bug in the function")
    with pytest.raises(ContainerKilled), vol.container("killed") as box:
        (box.path / "lost.txt").write_text("l")
        raise ContainerKilled
    assert vol.committed_files() == ["partial.txt"]


def test_volume_store_retries_a_busy_commit_after_closing_handles(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    (box.path / "log.txt").write_text("hello")
    handle = box.open("log.txt")
    store = VolumeStore(box, box.path, close_handles=box.close_all, sleep=lambda s: None)
    store.commit()
    assert handle.closed and box.commits == 2  # the first was refused after publishing


def test_volume_store_gives_up_on_a_commit_that_stays_busy(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("c")
    (box.path / "log.txt").write_text("hello")
    box.open("log.txt")
    store = VolumeStore(box, box.path, max_attempts=2, sleep=lambda s: None)
    with pytest.raises(StorageError, match="stayed busy after 2 commit attempts"):
        store.commit()
    box.close_all()


def test_closing_open_shards_lets_the_data_volume_reload(tmp_path: Path) -> None:
    vol = FakeVolume(tmp_path / "vol")
    box = vol.mount("data")
    config = build_config(
        "classifier",
        overrides=["data.image_size=16", "data.synthetic_classes=2", "data.synthetic_per_class=8"],
    )
    prepared = prepare_dataset(config.data, box.path, progress=False)
    dataset = ShardDataset(prepared, "train", 16, train=False)
    dataset[0]  # maps the shards
    with pytest.raises(RuntimeError, match="open files"):
        box.reload()
    store = VolumeStore(box, box.path, close_handles=close_open_shards, sleep=lambda s: None)
    store.reload()
    assert dataset[0][0].shape == (3, 16, 16)  # reopened on the next read
    assert close_open_shards() == 1


def test_the_app_closes_shards_before_retrying_the_data_volume(tmp_path: Path) -> None:
    from tinycats.cloud import modal_app

    data, outputs = modal_app.stores()
    assert data.close_handles is not None and outputs.close_handles is None
    config = build_config(
        "classifier",
        overrides=["data.image_size=16", "data.synthetic_classes=2", "data.synthetic_per_class=8"],
    )
    dataset = ShardDataset(
        prepare_dataset(config.data, tmp_path, progress=False), "val", 16, train=False
    )
    dataset[0]
    data.close_handles()
    assert dataset._arrays is None
