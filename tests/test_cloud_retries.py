"""The cloud train call under Modal's call semantics, on fake volumes, with injected failures.

Each attempt runs `training.train_call` (what `Trainer.train` runs in Modal) in a fresh
"container": new FakeVolume mounts with background commits at every file opened, a
commit on exit, none when killed. So only what the client would have published
survives an attempt, half-written files included.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fake_volume import ContainerKilled, FakeContainer, FakeVolume
from tinycats.cloud import jobs, training
from tinycats.cloud.resources import retry_delay
from tinycats.cloud.runner import Attempt, run_chain, run_with_retries
from tinycats.config import RetryConfig, apply_overrides, build_config
from tinycats.storage import CheckpointManager, RunRegistry, VolumeStore, select_keep
from tinycats.train import PreemptionGuard
from tinycats.train.preemption import stop_budget_seconds

TINY = [
    "data.image_size=16",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=24",
    "optim.batch_size=8",
    "optim.warmup_steps=2",
    "optim.lr=0.002",
    "optim.max_steps=16",
    "checkpoint.every_steps=4",
    "retention.keep_last=2",
    "retention.keep_best=1",
    "dit.preview_per_class=0",
]
"""A tiny TinyDiT run: retries are about the engine and the volume, not the model's size."""
RUN = "classifier-cloud-test"
POLICY = RetryConfig(max_retries=3, backoff_coefficient=2.0, initial_delay=10.0, max_delay=60.0)


class ContainerDied(ContainerKilled):
    """The container is gone: nothing it did after this is ever published."""


class DyingContainer:
    """A FakeContainer whose `die_at`-th commit never happens (the crash lands between the
    checkpoint write and its commit); every later commit fails too."""

    def __init__(self, inner: FakeContainer, die_at: int | None = None) -> None:
        self.inner, self.die_at, self.commits, self.dead = inner, die_at, 0, False

    def commit(self) -> None:
        self.commits += 1
        if self.dead or self.commits == self.die_at:
            self.dead = True
            self.inner.kill()
            raise ContainerDied(f"container died before commit #{self.commits}")
        self.inner.commit()

    def reload(self) -> None:
        self.inner.reload()


class SteppedGuard:
    """Wraps the attempt's guard; calls `on_step(n)` as the engine checks it after step n of
    this attempt (the engine reads `requested` once per optimizer step)."""

    def __init__(self, attempt: Attempt, on_step) -> None:
        self.attempt, self.on_step, self.steps = attempt, on_step, 0

    @property
    def requested(self) -> bool:
        self.steps += 1
        self.on_step(self.steps)
        return self.attempt.guard.requested

    @property
    def reason(self) -> str | None:
        return self.attempt.guard.reason

    def request(self, reason: str) -> None:
        self.attempt.guard.request(reason)


def layer(*extra: str) -> dict[str, Any]:
    """The caller's layer, as `tinycats cloud train --set ...` sends it."""
    return apply_overrides({"task": "dit"}, [*TINY, *extra])


def prepared(volume: FakeVolume, task: str, layer: dict[str, Any]) -> FakeVolume:
    """The client's first step: the run's data prepared by the CPU-only function, committed."""
    with volume.container("prepare") as box:
        config = build_config(task, base=layer)
        jobs.prepare_data_job(VolumeStore(box, box.path), config.to_dict())
    return volume


class Clock:
    """The slice clock: each training step takes `tick` seconds of it."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        return self.now


def make_body(
    root: Path, config: dict[str, Any], faults: dict[tuple[int, int], tuple[str, int]], tick=0.0
):
    """The train call of one attempt in fresh containers; `faults[(call, attempt)] = (kind,
    step)`; each step advances the slice clock by `tick` seconds."""
    data_vol = prepared(FakeVolume(root / "data"), "dit", config)
    out_vol = FakeVolume(root / "outputs", background_every=1)
    clock = Clock(tick)

    def body(attempt: Attempt) -> dict[str, Any]:
        kind, at = faults.get((attempt.call, attempt.number), ("none", 0))
        name = f"{attempt.call}-{attempt.number}"
        try:
            with (
                data_vol.container(f"data-{name}") as data,
                out_vol.container(f"out-{name}") as box,
            ):
                return attempt_in(data, box, kind, at, name, attempt)
        except ContainerDied as err:  # the platform sees a lost container: a failed attempt
            raise RuntimeError(f"container died: {err}") from None

    def attempt_in(data, box, kind, at, name, attempt) -> dict[str, Any]:
        out = DyingContainer(box)

        def on_step(step: int) -> None:
            clock.now += clock.tick
            if step != at:
                return
            if kind == "exception":
                raise RuntimeError(f"injected failure at step {step} of attempt {name}")
            if kind == "preempt":
                attempt.preempt("SIGINT")
            if kind == "crash-before-commit":
                out.die_at = out.commits + 1  # the next checkpoint is written, never committed

        return training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(out, box.path),
            "dit",
            config if attempt.call == 1 else {},  # a continuation runs on the record alone
            RUN,
            SteppedGuard(attempt, on_step),
            started=clock(),
            clock=clock,
            continue_run=lambda config: f"call-{attempt.call + 1}",
            call_id=f"call-{attempt.call}",
            gpu="T4",
        )

    return body, out_vol


def committed_weights(volume: FakeVolume) -> dict[str, dict[str, torch.Tensor]]:
    [run_dir] = (volume.backing / "checkpoints" / "dit").glob(f"*/{RUN}")
    final = run_dir / "step_00000016"
    return {name: load_file(final / f"{name}.safetensors") for name in ("model", "ema")}


@pytest.fixture(scope="module")
def runs(module_tmp: Path) -> dict[str, Any]:
    """An uninterrupted reference run, and the same run through four kinds of trouble."""
    config = layer()
    ref_body, ref_vol = make_body(module_tmp / "ref", config, {})
    reference = run_with_retries(ref_body, POLICY, sleep=lambda s: None)

    rng = random.Random(7)
    faults = {
        (1, 1): ("exception", rng.randint(2, 7)),  # mid-interval, after a committed checkpoint
        (1, 2): ("preempt", rng.randint(1, 5)),  # platform preemption: no retry used
        (1, 3): ("crash-before-commit", rng.randint(1, 3)),
    }
    slept: list[float] = []
    body, vol = make_body(module_tmp / "faulty", config, faults)
    outcome = run_with_retries(body, POLICY, sleep=slept.append)
    return {"reference": (reference, ref_vol), "faulty": (outcome, vol), "slept": slept}


def test_retried_run_completes_bitwise_equal_to_uninterrupted(runs) -> None:
    reference, ref_vol = runs["reference"]
    outcome, vol = runs["faulty"]
    assert [a.outcome for a in reference.attempts] == ["ok"]
    assert [a.outcome for a in outcome.attempts] == ["failed", "interrupted", "failed", "ok"]
    assert outcome.value["status"] == "completed" and outcome.value["step"] == 16
    assert outcome.value["resumed_from"] is not None and outcome.value["resumed_from"] > 0
    expected, got = committed_weights(ref_vol), committed_weights(vol)
    for name in expected:
        assert expected[name].keys() == got[name].keys()
        for key in expected[name]:
            assert torch.equal(expected[name][key], got[name][key]), f"{name}.{key} differs"


def test_retry_delays_follow_the_policy_and_preemption_uses_no_retry(runs) -> None:
    outcome, _ = runs["faulty"]
    assert outcome.retries_used == 2
    assert runs["slept"] == [retry_delay(POLICY, 1), retry_delay(POLICY, 2)] == [10.0, 20.0]
    assert "InputInterrupted" in outcome.attempts[1].error  # a KeyboardInterrupt, not a failure
    assert "container died" in outcome.attempts[2].error


def test_a_preempted_call_stops_inside_the_budget_below_modals_grace(runs) -> None:
    _, vol = runs["faulty"]
    check = vol.mount("stop-inspector")
    calls = RunRegistry(VolumeStore(check, check.path)).get(RUN)["cloud"]["calls"]
    [interrupted] = [c for c in calls if c["outcome"] == "interrupted"]
    budget = stop_budget_seconds(build_config("dit", base=layer()))
    assert budget == 25.0 and 0 < interrupted["stop_seconds"] < budget


def test_cleanup_on_volume_keeps_what_retention_keeps_and_commits(runs) -> None:
    _, vol = runs["faulty"]
    check = vol.mount("inspector")
    store = VolumeStore(check, check.path)
    manager = CheckpointManager(
        store, "dit", RUN, keep_last=2, keep_best=1, best_metric="val_loss", best_mode="min"
    )
    committed = sorted(i.step for i in manager.list())
    keep = select_keep(
        manager.records(),
        keep_last=2,
        keep_best=1,
        best_mode="min",
        latest_step=manager.latest_step(),
    )
    assert committed == sorted(keep)
    assert 16 in committed and len(committed) <= 3
    assert not [f for f in vol.committed_files() if ".tmp-" in f or ".trash-" in f]
    assert RunRegistry(store).get(RUN)["status"] == "completed"


def test_a_run_of_three_slices_completes_with_one_retry(runs, tmp_path) -> None:
    """Each slice stops itself before Modal's timeout and spawns its continuation: time is
    not a failure, so the one retry is left for the real failure in the second slice."""
    config = layer("modal.timeout_minutes=1")  # a 30 s slice; each step takes 5 s of it
    faults = {(2, 1): ("exception", 3)}
    body, vol = make_body(tmp_path, config, faults, tick=5.0)
    outcome = run_chain(body, RetryConfig(max_retries=1), sleep=lambda s: None)
    assert [(a.call, a.outcome) for a in outcome.attempts] == [
        (1, "ok"),
        (2, "failed"),
        (2, "ok"),
        (3, "ok"),
    ]
    assert outcome.value["status"] == "completed" and outcome.value["step"] == 16
    _, ref_vol = runs["reference"]
    expected, got = committed_weights(ref_vol), committed_weights(vol)
    for name in expected:
        for key in expected[name]:
            assert torch.equal(expected[name][key], got[name][key]), f"{name}.{key} differs"
    check = vol.mount("inspector")
    cloud = RunRegistry(VolumeStore(check, check.path)).get(RUN)["cloud"]
    assert [c["outcome"] for c in cloud["calls"]] == [
        "continued",
        "failed",
        "continued",
        "completed",
    ]
    assert cloud["gpu_seconds"] == pytest.approx(sum(c["seconds"] for c in cloud["calls"]))
    assert cloud["estimated_usd"] > 0


def test_a_gpu_never_prepares_data(tmp_path) -> None:
    data_vol, out_vol = FakeVolume(tmp_path / "data"), FakeVolume(tmp_path / "outputs")
    data, box = data_vol.mount("d"), out_vol.mount("o")
    result = training.train_call(
        VolumeStore(data, data.path),
        VolumeStore(box, box.path),
        "dit",
        layer(),
        RUN,
        PreemptionGuard(signals=()),
        started=0.0,
    )
    assert result["status"] == "error" and "is not prepared on the data volume" in result["error"]
    assert data_vol.committed_files() == []


def test_a_user_error_in_the_container_is_returned_not_raised(runs, tmp_path) -> None:
    """The run exists as a DiT run: training it as a classifier is deterministic, so it
    comes back as a value (exit 2 on the client), not as a failure to retry."""
    _, vol = runs["reference"]
    data_vol = prepared(FakeVolume(tmp_path / "data"), "dit", layer())
    data, box = data_vol.mount("d"), vol.mount("wrong-task")
    calls: list[int] = []

    def body(attempt: Attempt) -> dict[str, Any]:
        calls.append(attempt.number)
        return training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(box, box.path),
            "classifier",
            {},
            RUN,
            attempt.guard,
            started=0.0,
        )

    outcome = run_with_retries(body, POLICY, sleep=lambda s: None)
    assert calls == [1] and outcome.value["status"] == "error"
    assert "is a dit run, not classifier" in outcome.value["error"]


def test_retries_run_out_and_the_last_error_is_raised(tmp_path) -> None:
    calls: list[int] = []

    def always_fails(attempt: Attempt) -> None:
        calls.append(attempt.number)
        raise RuntimeError(f"boom {attempt.number}")

    slept: list[float] = []
    with pytest.raises(RuntimeError, match="boom 3"):
        run_with_retries(always_fails, RetryConfig(max_retries=2), sleep=slept.append)
    assert calls == [1, 2, 3] and slept == [10.0, 20.0]


def test_evaluate_sees_a_checkpoint_only_after_commit_and_reload(tmp_path) -> None:
    base = ["data.image_size=16", "data.synthetic_classes=4", "data.synthetic_per_class=24"]
    base += ["optim.batch_size=8", "optim.warmup_steps=2", "checkpoint.every_steps=4"]
    data_vol = prepared(FakeVolume(tmp_path / "data"), "classifier", apply_overrides({}, base))
    out_vol = FakeVolume(tmp_path / "outputs")
    data, trainer = data_vol.mount("data-train"), out_vol.mount("trainer")
    evaluator, eval_data = out_vol.mount("evaluator"), data_vol.mount("data-eval")
    guard = PreemptionGuard(signals=())

    def train(max_steps: int, container: Any) -> None:
        result = training.train_call(
            VolumeStore(data, data.path),
            VolumeStore(container, trainer.path),
            "classifier",
            apply_overrides({}, [*base, f"optim.max_steps={max_steps}"]),
            RUN,
            guard,
            started=0.0,
            clock=lambda: 0.0,
        )
        assert result["status"] == "completed", result

    def evaluate() -> dict[str, Any]:
        return jobs.evaluate_job(
            VolumeStore(evaluator, evaluator.path, close_handles=evaluator.close_all),
            VolumeStore(eval_data, eval_data.path),
            RUN,
            which="latest",
        )

    train(4, trainer)
    assert not (evaluator.path / "checkpoints").exists()  # committed, but not reloaded yet
    assert evaluate()["checkpoint"].endswith("step_00000004")

    class Uncommitted:
        def commit(self) -> None:  # the write happened; the commit has not (yet)
            pass

        def reload(self) -> None:
            trainer.reload()

    train(8, Uncommitted())
    assert list((trainer.path / "checkpoints").glob("*/*/*/step_00000008"))
    assert evaluate()["checkpoint"].endswith("step_00000004")

    trainer.commit()
    handle = evaluator.open("runs/" + RUN + ".json")  # an open file blocks a plain reload
    reloads = evaluator.reloads
    report = evaluate()
    assert handle.closed and evaluator.reloads == reloads + 1
    assert report["checkpoint"].endswith("step_00000008")
    assert (out_vol.backing / "reports" / RUN / "eval_test.json").is_file()  # committed
