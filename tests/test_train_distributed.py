"""Data-parallel training (gloo, two CPU processes): the same run as one process, exact resume
after a rank is killed, one checkpoint per save, a stop agreed on by every rank, and resume
at another number of ranks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinycats.config import build_config
from tinycats.data import ResumableSampler
from tinycats.errors import ConfigError
from tinycats.storage import LocalStore, RunRegistry
from tinycats.train import run_training
from tinycats.train.batches import EpochBatches
from tinycats.train.distributed import Distributed, check_divisible

GLOBAL_BATCH = 16
MAX_STEPS = 16
EVERY = 4
LAUNCH_TIMEOUT_S = 240  # a bound on each launch: a hang fails the test instead of the suite


def overrides(tmp: Path, **extra: object) -> list[str]:
    """A tiny classifier without MixUp/CutMix (their draws are per micro-batch): 4 classes of
    16 training images, so an epoch is 4 global batches of 16 and 8 micro-batches of 8."""
    items = {
        "data.image_size": 32,
        "data.synthetic_classes": 4,
        "data.synthetic_per_class": 18,
        "data.dir": str(tmp / "data"),
        "optim.batch_size": GLOBAL_BATCH,
        "optim.warmup_steps": 2,
        "optim.lr": 0.002,
        "optim.max_steps": MAX_STEPS,
        "checkpoint.every_steps": EVERY,
        "classifier.mixup_alpha": 0.0,
        "classifier.cutmix_alpha": 0.0,
        **extra,
    }
    return [f"{key}={json.dumps(value)}" for key, value in items.items()]


def torchrun(out: Path, options: list[str], sets: list[str]) -> list[str]:
    """The command line of `torchrun --standalone --nproc-per-node 2 -m tinycats train ...`."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args += ["-m", "tinycats", "train", "classifier", *options]
    for item in sets:
        args += ["--set", item]
    return [*args, "--out", str(out), "--no-progress"]


def launch(out: Path, run_id: str, sets: list[str], nproc: int = 2) -> subprocess.Popen:
    args = [sys.executable, "-m", "tinycats", "train", "classifier", "--run-id", run_id]
    for item in sets:
        args += ["--set", item]
    args += ["--out", str(out), "--no-progress", "--nproc", str(nproc)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_dir(out: Path, run_id: str) -> Path:
    [latest] = (out / "checkpoints" / "classifier").glob(f"*/{run_id}/latest.json")
    return latest.parent


def committed_step(out: Path, run_id: str) -> int:
    found = list((out / "checkpoints" / "classifier").glob(f"*/{run_id}/latest.json"))
    return int(json.loads(found[0].read_text())["step"]) if found else 0


def weights(out: Path, run_id: str) -> dict[str, dict[str, torch.Tensor]]:
    folder = run_dir(out, run_id)
    step_dir = folder / json.loads((folder / "latest.json").read_text())["dir"]
    return {name: load_file(step_dir / f"{name}.safetensors") for name in ("model", "ema")}


def step_folders(out: Path, run_id: str) -> list[str]:
    return sorted(p.name for p in run_dir(out, run_id).iterdir() if p.name.startswith("step_"))


def logged_losses(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"step \d+/\d+\s+loss ([0-9.]+)", text)]


def rank_pids(launcher: int) -> list[int]:
    """The launcher's spawned ranks (not multiprocessing's resource tracker), oldest first."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    ranks = [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return sorted(ranks)


def wait_for(predicate, timeout: float = LAUNCH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


@pytest.fixture(scope="module")
def reference(module_tmp: Path) -> tuple[Path, str]:
    """An uninterrupted two-rank run (global batch 16, 8 per rank), through `--nproc 2`."""
    proc = launch(module_tmp / "out", "ref", overrides(module_tmp))
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, err
    return module_tmp, err


# ---- the sampler: one global order, sharded --------------------------------------------------


def test_ranks_share_each_global_batch_of_one_order() -> None:
    """Rank shares of every global batch, side by side, are the one-process batch; a position
    (global samples) means the same place for any number of ranks."""
    single = list(ResumableSampler(40, seed=3))
    for world in (2, 4):
        shares = [
            list(ResumableSampler(40, seed=3, rank=r, world_size=world, batch_size=8))
            for r in range(world)
        ]
        per = 8 // world
        rebuilt = [i for b in range(5) for s in shares for i in s[b * per : (b + 1) * per]]
        assert rebuilt == single
        resumed = ResumableSampler(40, seed=3, rank=1, world_size=world, batch_size=8)
        resumed.load_state_dict({"epoch": 0, "position": 16})
        assert list(resumed) == shares[1][2 * per :]  # from the third global batch on
        assert len(resumed) == 3 * per
    with pytest.raises(ValueError, match="cannot take a share"):
        ResumableSampler(40, rank=0, world_size=3, batch_size=8)


def test_global_batch_must_split_over_the_ranks() -> None:
    assert check_divisible(16, 4) == 4
    with pytest.raises(ConfigError, match=r"optim\.batch_size=16 does not split over 3 ranks"):
        check_divisible(16, 3)


def test_batch_stream_position_is_global_samples(tmp_path) -> None:
    config = build_config("classifier", overrides=overrides(tmp_path))
    from tinycats.train.batches import load_training_data

    data = load_training_data(config, tmp_path / "out")
    stream = EpochBatches(data.train_set, config, torch.device("cpu"), Distributed(1, 2))
    for _ in range(3):
        images, _ = stream.next()
        assert images.shape[0] == GLOBAL_BATCH // 2
    assert stream.state_dict() == {"epoch": 0, "position": 3 * GLOBAL_BATCH}
    old = EpochBatches(data.train_set, config, torch.device("cpu"))
    old.load_state_dict({"epoch": 1, "consumed": 2})  # a checkpoint from before data parallelism
    assert old.state_dict() == {"epoch": 1, "position": 2 * GLOBAL_BATCH}


# ---- two ranks against one process -----------------------------------------------------------


def test_two_ranks_match_one_process_with_the_same_global_batch(reference, capsys) -> None:
    """Global batch 16 both ways: two ranks of 8, and one process of 8 × 2 accumulation.
    (Accumulation, because batch norm normalises over each micro-batch, and torch's
    SyncBatchNorm has no CPU path: with 8 per rank, the statistics are over 8 either way.)"""
    tmp, ddp_log = reference
    out = tmp / "single"
    sets = overrides(tmp, **{"optim.batch_size": GLOBAL_BATCH // 2, "optim.grad_accum": 2})
    config = build_config("classifier", overrides=sets)
    result = run_training(config, LocalStore(out), "one", progress=False)
    single_log = capsys.readouterr().err
    assert result.step == MAX_STEPS

    ddp, single = logged_losses(ddp_log), logged_losses(single_log)
    assert len(ddp) == len(single) == MAX_STEPS
    assert ddp == pytest.approx(single, abs=2e-4)  # the logged loss is the mean over ranks

    two, one = weights(tmp / "out", "ref"), weights(out, "one")
    # Parameters (and their EMA) match; batch-norm running statistics are rank 0's alone
    # under DDP, where the one process updates them on both micro-batches.
    compared = 0
    for name in ("model", "ema"):
        for key, value in one[name].items():
            if "running_" in key or "num_batches_tracked" in key:
                continue
            torch.testing.assert_close(two[name][key], value, atol=1e-4, rtol=1e-3)
            compared += 1
    assert compared > 100


def test_each_save_writes_one_checkpoint(reference) -> None:
    tmp, _ = reference
    out = tmp / "out"
    assert step_folders(out, "ref") == [f"step_{s:08d}" for s in range(EVERY, MAX_STEPS + 1, EVERY)]
    record = RunRegistry(LocalStore(out)).get("ref")
    assert record["status"] == "completed" and record["step"] == MAX_STEPS


# ---- failures and stops ----------------------------------------------------------------------


def test_killed_rank_ends_the_job_and_resume_is_bitwise(reference, tmp_path) -> None:
    """SIGKILL one rank: the launcher stops the other and fails within the test's bound (no
    hang in a collective); the run resumes from its last checkpoint to the very weights of
    the uninterrupted run."""
    ref_tmp, _ = reference
    out = tmp_path / "out"
    sets = overrides(ref_tmp)  # the same data folder and config as the reference
    proc = launch(out, "cut", sets)
    wait_for(lambda: committed_step(out, "cut") >= EVERY or proc.poll() is not None)
    victims = rank_pids(proc.pid)
    assert len(victims) == 2, victims
    os.kill(victims[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    stopped_at = committed_step(out, "cut")
    assert proc.returncode == 1, err
    assert "failed (SIGKILL)" in err and "resumes from its last committed checkpoint" in err
    assert EVERY <= stopped_at < MAX_STEPS, f"the kill came too late to test resume ({stopped_at})"

    resumed = launch(out, "cut", sets)
    _, err = resumed.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert resumed.returncode == 0, err
    assert f"resuming cut at step {stopped_at}" in err
    assert_bitwise_equal(weights(out, "cut"), weights(ref_tmp / "out", "ref"))


def test_stop_on_one_rank_stops_every_rank_with_one_checkpoint(reference, tmp_path) -> None:
    """SIGTERM to rank 1 only: all ranks agree to stop at the same step, rank 0 writes one
    checkpoint, and the run resumes in ONE process from the same global sample position."""
    ref_tmp, _ = reference
    out = tmp_path / "out"
    sets = overrides(ref_tmp, **{"checkpoint.every_steps": 100, "optim.max_steps": 40})
    proc = launch(out, "stop", sets)
    # Rank 0 records the run once every rank has joined, so rank 1's guard is installed.
    wait_for(lambda: (out / "runs" / "stop.json").is_file() or proc.poll() is not None)
    os.kill(rank_pids(proc.pid)[-1], signal.SIGTERM)
    _, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, err
    record = RunRegistry(LocalStore(out)).get("stop")
    assert record["status"] == "preempted", record
    assert record["preempted_by"] == "a stop requested on another rank"
    stopped_at = record["step"]
    assert step_folders(out, "stop") == [f"step_{stopped_at:08d}"]
    assert 0 < stopped_at < 40

    config = build_config("classifier", overrides=sets)
    result = run_training(config, LocalStore(out), "stop", progress=False)  # world size 1
    assert result.resumed_from == stopped_at and result.status == "completed"
    saved = torch.load(
        run_dir(out, "stop") / f"step_{stopped_at:08d}" / "train_state.pt", weights_only=True
    )
    batches_per_epoch = 64 // GLOBAL_BATCH
    assert saved["data"] == {
        "epoch": stopped_at // batches_per_epoch,
        "position": stopped_at % batches_per_epoch * GLOBAL_BATCH,
    }


def test_plain_torchrun_runs_the_cli_in_every_rank(tmp_path) -> None:
    """`torchrun -m tinycats train ...`: rank 0 plans the run (a new run id here) and the
    others follow it; one run, one record, one summary line."""
    out = tmp_path / "out"
    args = torchrun(
        out, ["--resume", "never", "--json"], overrides(tmp_path, **{"optim.max_steps": 4})
    )
    proc = subprocess.run(args, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # rank 0's alone: a second would not parse
    assert result["status"] == "completed" and result["step"] == 4
    [record] = RunRegistry(LocalStore(out)).list()
    assert record["run_id"] == result["run_id"] and record["status"] == "completed"
    assert step_folders(out, result["run_id"]) == ["step_00000004"]


def test_ctrl_c_under_plain_torchrun_stops_every_rank_with_one_checkpoint(tmp_path) -> None:
    """Ctrl-C in a terminal is SIGINT to torchrun's process group. The ranks run in their own
    sessions, so it reaches them once, forwarded by torchrun; they agree on a step and rank 0
    writes one checkpoint."""
    out = tmp_path / "out"
    sets = overrides(tmp_path, **{"checkpoint.every_steps": 1000, "optim.max_steps": 400})
    proc = subprocess.Popen(
        torchrun(out, ["--run-id", "ctrlc"], sets),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    # Rank 0 records the run once every rank has joined; a stop is agreed after a step.
    wait_for(lambda: (out / "runs" / "ctrlc.json").is_file() or proc.poll() is not None)
    os.killpg(proc.pid, signal.SIGINT)
    text, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    record = RunRegistry(LocalStore(out)).get("ctrlc")
    assert record["status"] == "preempted", (record, err)
    stopped_at = record["step"]
    assert 0 < stopped_at < 400, err
    assert step_folders(out, "ctrlc") == [f"step_{stopped_at:08d}"]
    # Rank 0's summary, once (torchrun itself then prints its SignalException, torch's way).
    assert text.count(f"preempted ctrlc at step {stopped_at}/400") == 1, (text, err)
