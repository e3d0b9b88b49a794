"""One writer per run across containers: the lease, and two runners racing on one volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fake_volume import FakeDict, FakeVolume
from test_cloud_retries import RUN, layer, prepared
from tinycats.cloud import training
from tinycats.cloud.lease import RunLease
from tinycats.storage import CheckpointManager, VolumeStore, verify_checkpoint
from tinycats.storage.run_lock import LeaseLost, RunBusy
from tinycats.train import PreemptionGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_two_containers_racing_for_a_run_exactly_one_wins() -> None:
    kv, clock = FakeDict(), Clock()
    first = RunLease(kv, "r", "fc-1", clock=clock, sleep=clock.sleep)
    second = RunLease(kv, "r", "fc-2", clock=clock, sleep=clock.sleep)
    first.acquire()
    with pytest.raises(RunBusy, match="run r is being trained by call fc-1"):
        second.acquire()
    first.release()
    second.acquire()  # a released lease is free at once
    assert second.live_holder()["call"] == "fc-2"


def test_a_restarted_input_waits_for_its_old_container_then_takes_over() -> None:
    kv, clock = FakeDict(), Clock()
    old = RunLease(kv, "r", "fc-1", ttl_s=90, clock=clock, sleep=clock.sleep)
    old.acquire()
    restarted = RunLease(kv, "r", "fc-1", ttl_s=90, clock=clock, sleep=clock.sleep)
    restarted.acquire()  # same call: waits (on the fake clock) until the old lease expires
    assert clock.now == pytest.approx(1090.0)
    with pytest.raises(LeaseLost):
        old.fence()  # the old container may publish nothing more
    with pytest.raises(LeaseLost):
        old.renew()
    restarted.fence()


def test_a_heartbeat_keeps_the_lease() -> None:
    kv, clock = FakeDict(), Clock()
    holder = RunLease(kv, "r", "fc-1", ttl_s=90, clock=clock, sleep=clock.sleep)
    holder.acquire()
    for _ in range(5):
        clock.now += 60
        holder.renew()
    with pytest.raises(RunBusy):
        RunLease(kv, "r", "fc-2", clock=clock, sleep=clock.sleep).acquire()


def test_two_runners_racing_on_one_volume_one_trains_nothing_is_lost(tmp_path: Path) -> None:
    """A user relaunches a run while its detached call is alive: the second call is refused
    with one line naming the live call; the first trains to the end."""
    config = layer()
    data_vol = prepared(FakeVolume(tmp_path / "data"), "dit", config)
    out_vol, kv = FakeVolume(tmp_path / "out"), FakeDict()
    refused: list[dict[str, Any]] = []

    def call(name: str, guard: Any) -> dict[str, Any]:
        data, box = data_vol.mount(f"data-{name}"), out_vol.mount(f"out-{name}")
        return training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(box, box.path),
            "dit",
            config,
            RUN,
            guard,
            started=0.0,
            clock=lambda: 0.0,
            call_id=name,
            lease=lambda run: RunLease(kv, run, name),
        )

    class RaceAtStep3(PreemptionGuard):
        steps = 0

        @property
        def requested(self) -> bool:
            self.steps += 1
            if self.steps == 3:
                refused.append(call("fc-second", PreemptionGuard(signals=())))
            return super().requested

    result = call("fc-first", RaceAtStep3(signals=()))
    assert result["status"] == "completed" and result["step"] == 16
    assert [r["status"] for r in refused] == ["error"]
    assert refused[0]["error"].startswith(f"run {RUN} is being trained by call fc-first;")
    inspector = out_vol.mount("inspector")
    manager = CheckpointManager(VolumeStore(inspector, inspector.path), "dit", RUN)
    assert manager.load_latest().info.step == 16
    assert all(verify_checkpoint(info.path) == [] for info in manager.list())
    ledger = (inspector.path / "cloud" / "calls" / f"{RUN}.json").read_text()
    assert "fc-first" in ledger and "fc-second" not in ledger  # the loser wrote nothing


def test_the_client_refuses_to_relaunch_a_live_run_before_any_gpu() -> None:
    from tinycats.cloud import client
    from tinycats.config import build_config

    kv = FakeDict()
    live = RunLease(kv, "r", "fc-live")  # on the wall clock, as the client reads it
    live.acquire()
    with pytest.raises(RunBusy, match="run r is being trained by call fc-live"):
        client.check_not_live(build_config("dit"), "r", kv)
    live.release()
    client.check_not_live(build_config("dit"), "r", kv)
