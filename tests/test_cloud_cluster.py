"""A Modal cluster call (`--nodes 2`) against a fake cluster context: two containers as two
processes on 127.0.0.1 (tests/cluster_container.py), each running the launcher as node 0
or 1 with one gloo rank, over fake volumes. Container 0 alone holds the lease and commits,
a stop sent to container 1 stops both with one checkpoint, the resumed run ends with the
very weights of one container with two ranks, and a dead container ends the call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fake_volume import FakeVolume
from tinycats.cloud import jobs, training
from tinycats.cloud.cluster import FollowerOutputs
from tinycats.cloud.ranks import CommitRelay
from tinycats.config import apply_overrides, build_config
from tinycats.storage import CheckpointManager, LocalStore, RunRegistry, VolumeStore
from tinycats.train import PreemptionGuard
from tinycats.train.distributed import Distributed

HELPER = Path(__file__).with_name("cluster_container.py")
RUN = "classifier-cluster-test"
MAX_STEPS, EVERY = 12, 4
TINY = [
    "data.image_size=32",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=18",
    "optim.batch_size=16",
    "optim.warmup_steps=2",
    "optim.lr=0.002",
    f"optim.max_steps={MAX_STEPS}",
    f"checkpoint.every_steps={EVERY}",
    "classifier.mixup_alpha=0.0",
    "classifier.cutmix_alpha=0.0",
]
CALL_TIMEOUT_S = 240  # a bound on each call: a hang fails the test instead of the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def volumes(tmp: Path) -> tuple[FakeVolume, FakeVolume]:
    """Fresh data and outputs volumes, the data prepared as `cloud prepare` would."""
    data_vol, out_vol = FakeVolume(tmp / "data"), FakeVolume(tmp / "outputs")
    with data_vol.container("prepare") as box:
        config = build_config("classifier", overrides=TINY)
        jobs.prepare_data_job(VolumeStore(box, box.path), config.to_dict())
    return data_vol, out_vol


def start_cluster(tmp: Path, call: str) -> list[tuple[subprocess.Popen, Path, Path]]:
    """Both containers of one call, each in its own session (a host: killed as a whole)."""
    port, started = free_port(), []
    for rank in (0, 1):
        report = tmp / f"{call}-{rank}.json"
        spec = {
            "rank": rank,
            "count": 2,
            "port": port,
            "data": str(tmp / "data"),
            "outputs": str(tmp / "outputs"),
            "run": RUN,
            "call": call,
            "layer": apply_overrides({"task": "classifier"}, TINY),
            "report": str(report),
        }
        spec_file = tmp / f"{call}-{rank}.spec.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), str(spec_file)],
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        mount = tmp / "outputs" / "mounts" / f"{call}-node{rank}"
        started.append((proc, report, mount))
    return started


def finish(started: list[tuple[subprocess.Popen, Path, Path]]) -> list[dict[str, Any]]:
    reports = []
    for proc, report, _ in started:
        _, err = proc.communicate(timeout=CALL_TIMEOUT_S)
        assert proc.returncode == 0 and report.is_file(), err
        reports.append(json.loads(report.read_text()))
    return reports


def wait_for(predicate, timeout: float = CALL_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def final_weights(backing: Path) -> dict[str, dict[str, torch.Tensor]]:
    manager = CheckpointManager(LocalStore(backing), "classifier", RUN)
    [latest] = [info for info in manager.list() if info.step == MAX_STEPS]
    return {name: load_file(latest.path / f"{name}.safetensors") for name in ("model", "ema")}


@pytest.fixture(scope="module")
def one_container(module_tmp: Path) -> Path:
    """The reference: one container, two ranks (`--gpu X:2`), uninterrupted."""
    data_vol, out_vol = volumes(module_tmp)
    with data_vol.container("c") as data, out_vol.container("c") as box:
        result = training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(box, box.path),
            "classifier",
            apply_overrides({"task": "classifier"}, TINY),
            RUN,
            PreemptionGuard(signals=()),
            started=time.monotonic(),
            call_id="c",
            nproc=2,
        )
    assert result["status"] == "completed", result
    return out_vol.backing


@pytest.mark.slow  # three launches of two processes each: over a minute on two cores
def test_a_stop_on_any_container_stops_the_cluster_and_the_run_resumes_bitwise(
    one_container, tmp_path
) -> None:
    """SIGTERM to container 1's process (Modal's interrupt reaches that container only):
    both nodes stop at one step, container 0 commits one checkpoint; a second cluster call
    resumes it (container 1 loads the checkpoint rank 0 names) and ends bitwise equal to
    one container with two ranks: the same ranks, data shards, seeds and summation of two
    gradients (gloo adds two tensors in one order), one intra-op thread everywhere."""
    _, out_vol = volumes(tmp_path)
    first = start_cluster(tmp_path, "c1")
    leader_mount = first[0][2]
    wait_for(lambda: (leader_mount / "runs" / f"{RUN}.json").is_file())
    os.kill(first[1][0].pid, signal.SIGTERM)
    leader, follower = finish(first)

    assert leader["node"] == [2, 0, "127.0.0.1"] and follower["node"] == [2, 1, "127.0.0.1"]
    # Neither knew why the other stopped, so both report a platform interruption, which
    # Modal restarts without using a retry; only container 0 committed.
    assert leader["error"][0] == follower["error"][0] == "InputInterrupted"
    generation, entry = leader["lease"]
    assert generation == 1 and entry["call"] == "c1" and entry["released"]
    assert leader["commits"] > 0 and follower["lease"] == [0, None]
    assert follower["commits"] == 0 and follower["unpublished"] == []
    published = CheckpointManager(LocalStore(out_vol.backing), "classifier", RUN)
    record = RunRegistry(LocalStore(out_vol.backing)).get(RUN)
    stopped = record["step"]
    assert record["status"] == "preempted" and 0 < stopped < MAX_STEPS
    assert [info.step for info in published.list()] == [s for s in (4, 8) if s < stopped] + [
        stopped
    ]

    leader, follower = finish(start_cluster(tmp_path, "c2"))
    assert "error" not in leader and "error" not in follower, (leader, follower)
    assert leader["result"]["status"] == "completed" and leader["result"]["step"] == MAX_STEPS
    assert leader["result"]["resumed_from"] == follower["result"]["resumed_from"] == stopped
    assert follower["result"]["node"] == 1 and follower["commits"] == 0
    assert follower["unpublished"] == []
    steps = [info.step for info in published.list()]
    assert steps == sorted(set(steps)) and steps[-1] == MAX_STEPS  # one folder per save
    calls = RunRegistry(LocalStore(out_vol.backing)).get(RUN)["cloud"]["calls"]
    assert [c["nodes"] for c in calls] == [2, 2]  # billed for both containers

    cluster, single = final_weights(out_vol.backing), final_weights(one_container)
    for name in ("model", "ema"):
        assert cluster[name].keys() == single[name].keys()
        for key in single[name]:
            assert torch.equal(cluster[name][key], single[name][key]), f"{name}.{key} differs"


def test_a_dead_container_ends_the_cluster_call(tmp_path) -> None:
    """Container 1's host is lost (SIGKILL to its launcher and rank): container 0's rank
    fails at its next collective, its launcher fails the call (which Modal retries), and
    nothing half-agreed is committed."""
    volumes(tmp_path)
    started = start_cluster(tmp_path, "dead")
    (leader, leader_report, leader_mount), (follower, _, _) = started
    wait_for(lambda: (leader_mount / "runs" / f"{RUN}.json").is_file())
    os.killpg(follower.pid, signal.SIGKILL)
    killed = time.monotonic()
    _, err = leader.communicate(timeout=CALL_TIMEOUT_S)
    follower.wait(timeout=10)
    assert time.monotonic() - killed < 60, "the survivor took too long to notice"
    report = json.loads(leader_report.read_text())
    assert report["error"][0] == "RankFailed", (report, err)
    assert "rank 0 of 2 failed" in report["error"][1]


def test_a_follower_reloads_for_the_checkpoint_rank_0_names_and_never_commits(tmp_path) -> None:
    """A follower container mounted before container 0's checkpoint was committed: its rank
    is told the checkpoint's path (relative to the mount), finds it missing, asks its
    launcher to reload, and loads it; a commit asked of that launcher is refused."""
    out_vol = FakeVolume(tmp_path / "outputs")
    with out_vol.container("follower") as follower, out_vol.container("leader") as leader:
        written = CheckpointManager(VolumeStore(leader, leader.path), "classifier", RUN)
        info = written.save(3, {"model": {"w": torch.arange(4.0)}}, {"step": 3}, {})
        leader.commit()
        chosen = str(info.path.relative_to(leader.path))

        class FollowerRank(Distributed):  # rank 1 of 2: rank 0 named `chosen`
            def on_main(self, work):
                return None

            def broadcast_json(self, value):
                return chosen

        with CommitRelay(FollowerOutputs(VolumeStore(follower, follower.path), 1)) as relayed:
            manager = CheckpointManager(relayed, "classifier", RUN)
            loaded = FollowerRank(rank=1, world_size=2).same_checkpoint(manager)
            with pytest.raises(RuntimeError, match="container 1 of the cluster may not commit"):
                relayed.commit()
        assert loaded.info.step == 3 and torch.equal(
            loaded.weights["model"]["w"], torch.arange(4.0)
        )
        assert follower.reloads == 1 and follower.commits == 0
        assert follower.unpublished() == []
