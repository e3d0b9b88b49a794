"""A multi-GPU container's call (`--gpu H100:4`), with two gloo ranks on the CPU and fake
volumes: rank 0's checkpoints are published only through the launcher's commit relay, a
slice's end reaches every rank, and the continuation resumes from what was published."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fake_volume import FakeVolume
from tinycats.cloud import jobs, training
from tinycats.cloud.ranks import CommitRelay
from tinycats.config import apply_overrides, build_config
from tinycats.errors import StorageError
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry, VolumeStore
from tinycats.storage.run_lock import LeaseLost
from tinycats.train import PreemptionGuard

RUN = "classifier-ranks-test"
TINY = [
    "data.image_size=32",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=18",
    "optim.batch_size=16",
    "optim.warmup_steps=2",
    "optim.max_steps=30",
    "checkpoint.every_steps=100",
]


class StopAfterFirstWrite:
    """The slice's guard: its time runs out once rank 0 has written anything under the
    outputs mount (the run record), so the stop lands while the ranks train."""

    def __init__(self, mount: Path) -> None:
        self.mount, self.guard = mount, PreemptionGuard(signals=())

    @property
    def requested(self) -> bool:
        if not self.guard.requested and (self.mount / "runs" / f"{RUN}.json").is_file():
            self.guard.request(training.TIME_BUDGET_REASON)
        return self.guard.requested

    @property
    def reason(self) -> str | None:
        return self.guard.reason

    def request(self, reason: str) -> None:
        self.guard.request(reason)


def call(data_vol: FakeVolume, out_vol: FakeVolume, name: str, guard_for) -> dict[str, Any]:
    with data_vol.container(f"data-{name}") as data, out_vol.container(f"out-{name}") as box:
        return training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(box, box.path),
            "classifier",
            apply_overrides({"task": "classifier"}, TINY),
            RUN,
            guard_for(box.path),
            started=time.monotonic(),
            continue_run=lambda config: f"{name}-next",
            call_id=name,
            nproc=2,
        )


def test_two_ranks_in_one_container_publish_through_the_launcher(tmp_path) -> None:
    data_vol, out_vol = FakeVolume(tmp_path / "data"), FakeVolume(tmp_path / "outputs")
    with data_vol.container("prepare") as box:
        config = build_config("classifier", overrides=TINY)
        jobs.prepare_data_job(VolumeStore(box, box.path), config.to_dict())

    first = call(data_vol, out_vol, "c1", StopAfterFirstWrite)
    assert first["status"] == "continued" and first["next_call_id"] == "c1-next"
    stopped = first["step"]
    assert 0 < stopped < 30

    # What a fresh container sees is what the relay committed: one checkpoint, the stop's.
    published = CheckpointManager(LocalStore(out_vol.backing), "classifier", RUN)
    assert [info.step for info in published.list()] == [stopped]
    record = json.loads((out_vol.backing / "runs" / f"{RUN}.json").read_text())
    assert record["status"] == "preempted" and record["cloud"]["calls"][0]["outcome"] == "continued"

    second = call(data_vol, out_vol, "c2", lambda mount: PreemptionGuard(signals=()))
    assert second["status"] == "completed" and second["resumed_from"] == stopped
    assert second["step"] == 30
    final = RunRegistry(LocalStore(out_vol.backing)).get(RUN)
    assert final["status"] == "completed" and final["step"] == 30


def test_a_failed_commit_reaches_the_rank_as_its_error(tmp_path) -> None:
    class Full:
        root = tmp_path

        def commit(self) -> None:
            raise StorageError("the outputs volume is full; free space or use another volume")

        def reload(self) -> None:
            pass

    class Lost(Full):
        def commit(self) -> None:
            raise LeaseLost("run r is now held by call fc-2; this call stops")

    with CommitRelay(Full()) as relayed:
        relayed.reload()
        with pytest.raises(StorageError, match="volume is full"):
            relayed.commit()
    # LeaseLost is defined outside errors.py and still reaches the rank as itself.
    with CommitRelay(Lost()) as relayed, pytest.raises(LeaseLost, match="held by call fc-2"):
        relayed.commit()
