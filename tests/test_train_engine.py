"""The training engine: exact resume (SIGTERM and SIGKILL), preemption, fallback, learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinycats.config import build_config
from tinycats.errors import ConfigError
from tinycats.storage import LocalStore, RunRegistry
from tinycats.train import PreemptionGuard, run_training
from tinycats.train.async_checkpoint import snapshot
from tinycats.train.device import autocast_dtype
from tinycats.train.optimizer import build_optimizer, load_optimizer_state
from tinycats.train.run import build_trainer
from tinycats.train.schedule import train_image_size

TINY = [
    "data.image_size=32",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=24",
    "optim.batch_size=8",
    "optim.warmup_steps=2",
    "optim.lr=0.002",
]


def tiny_overrides(tmp_path: Path, max_steps: int, every: int) -> list[str]:
    return [
        *TINY,
        f"data.dir={json.dumps(str(tmp_path / 'data'))}",
        f"optim.max_steps={max_steps}",
        f"checkpoint.every_steps={every}",
    ]


def spawn(*args: str, out: Path) -> subprocess.Popen:
    """`tinycats ARGS` as a real process, which the tests signal and kill."""
    return subprocess.Popen(
        [sys.executable, "-m", "tinycats", *args, "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def train_args(run_id: str, overrides: list[str], resume: str = "auto") -> list[str]:
    args = ["train", "classifier", "--run-id", run_id, "--resume", resume]
    for item in overrides:
        args += ["--set", item]
    return args


def final_weights(out: Path, run_id: str) -> dict[str, dict[str, torch.Tensor]]:
    """The weights `latest.json` points to. Not the highest-numbered folder: a run killed
    mid-save leaves a `step_X.tmp-<uuid>` folder beside the published ones."""
    [latest] = (out / "checkpoints" / "classifier").glob(f"*/{run_id}/latest.json")
    step_dir = latest.parent / json.loads(latest.read_text())["dir"]
    return {name: load_file(step_dir / f"{name}.safetensors") for name in ("model", "ema")}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def metrics_lines(out: Path, run_id: str) -> list[dict]:
    [log] = (out / "checkpoints" / "classifier").glob(f"*/{run_id}/metrics.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


def committed_step(out: Path, run_id: str) -> int:
    for latest in (out / "checkpoints" / "classifier").glob(f"*/{run_id}/latest.json"):
        return int(json.loads(latest.read_text())["step"])
    return 0


@pytest.fixture(scope="module")
def reference(module_tmp: Path) -> tuple[Path, list[str], dict]:
    """An uninterrupted 40-step run, trained by the CLI in a subprocess. It grows its
    training size from 16 to 32 px half-way, so resuming must also restore the size."""
    overrides = [
        *tiny_overrides(module_tmp, max_steps=40, every=4),
        "data.progressive_min_size=16",
        "tracking.log_every=2",  # a line between checkpoints: the kill lands among them
    ]
    proc = spawn(*train_args("ref", overrides), out=module_tmp / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = metrics_lines(module_tmp / "out", "ref")
    assert [(x["step"], x["kind"]) for x in lines if x["kind"] == "train"] == [
        (s, "train") for s in range(2, 41, 2)
    ]
    assert [x["step"] for x in lines if x["kind"] == "eval"] == list(range(4, 41, 4))
    assert "lr" in err and " 16 px" in err and " 32 px" in err  # the log shows the size
    return module_tmp, overrides, final_weights(module_tmp / "out", "ref")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_interrupted_and_resumed_run_is_bitwise_equal(reference, tmp_path, sig, cli) -> None:
    _, overrides, expected = reference
    out = tmp_path / "out"
    proc = spawn(*train_args("cut", overrides), out=out)
    wait_for(lambda: committed_step(out, "cut") >= 8 or proc.poll() is not None)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    stopped_at = committed_step(out, "cut")
    assert 8 <= stopped_at < 40, f"the signal arrived too late to test resume ({stopped_at})"
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err
        record = RunRegistry(LocalStore(out)).get("cut")
        assert record["status"] == "preempted"
        verify = cli("ckpt", "verify", "cut", "--out", str(out))
        assert verify.returncode == 0, verify.stdout + verify.stderr
    else:
        assert proc.returncode == -signal.SIGKILL

    resumed = spawn(*train_args("cut", overrides), out=out)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert RunRegistry(LocalStore(out)).get("cut")["status"] == "completed"
    assert_bitwise_equal(final_weights(out, "cut"), expected)
    # The metrics log: every step exactly once, with the uninterrupted run's values; a
    # stop's checkpoint is unevaluated, so a SIGTERM on an evaluation step skips that one.
    ref, cut = metrics_lines(reference[0] / "out", "ref"), metrics_lines(out, "cut")
    if sig == signal.SIGTERM:
        ref = [x for x in ref if (x["step"], x["kind"]) != (stopped_at, "eval")]
    assert [(x["step"], x["kind"]) for x in cut] == [(x["step"], x["kind"]) for x in ref]
    for a, b in zip(cut, ref, strict=True):
        assert (a.get("loss"), a.get("val_loss"), a.get("lr")) == (
            b.get("loss"),
            b.get("val_loss"),
            b.get("lr"),
        )


def test_corrupt_newest_checkpoint_is_skipped_on_resume(tmp_path) -> None:
    store = LocalStore(tmp_path / "out")
    first = build_config("classifier", overrides=tiny_overrides(tmp_path, max_steps=8, every=4))
    assert run_training(first, store, "r", progress=False).step == 8
    [step8] = (tmp_path / "out" / "checkpoints" / "classifier").glob("*/r/step_00000008")
    weights = step8 / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    longer = build_config("classifier", overrides=tiny_overrides(tmp_path, max_steps=12, every=4))
    result = run_training(longer, store, "r", progress=False)
    assert result.resumed_from == 4
    assert result.step == 12 and result.status == "completed"


def test_preemption_request_checkpoints_at_the_next_step(tmp_path) -> None:
    store = LocalStore(tmp_path / "out")
    config = build_config("classifier", overrides=tiny_overrides(tmp_path, max_steps=50, every=100))
    guard = PreemptionGuard(signals=())
    guard.request("test")  # as if SIGTERM had arrived before the first step finished
    result = run_training(config, store, "p", guard=guard, progress=False)
    assert result.status == "preempted" and result.step == 1
    record = RunRegistry(store).get("p")
    assert record["status"] == "preempted"
    assert committed_step(tmp_path / "out", "p") == 1


def test_second_ctrl_c_interrupts_at_once() -> None:
    with PreemptionGuard(signals=(signal.SIGINT,)) as guard:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert guard.requested and guard.reason == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)


@pytest.mark.parametrize(
    "optimizer", [["optim.lr=0.002"], ["optim.optimizer=sgd", "optim.lr=0.05", "optim.clip_grad=0"]]
)
def test_classifier_learns_synthetic_data(tmp_path, optimizer: list[str]) -> None:
    overrides = [
        "data.image_size=32",
        "data.synthetic_classes=4",
        "data.synthetic_per_class=48",
        f"data.dir={json.dumps(str(tmp_path / 'data'))}",
        "optim.batch_size=16",
        "optim.max_steps=60",
        "optim.warmup_steps=5",
        *optimizer,
        "checkpoint.every_steps=60",
    ]
    config = build_config("classifier", overrides=overrides)
    result = run_training(config, LocalStore(tmp_path / "out"), "learn", progress=False)
    assert result.metrics["val_acc"] >= 0.95, result.metrics


def test_sgd_is_nesterov_and_skips_decay_on_biases_and_norms() -> None:
    config = build_config("classifier", overrides=["optim.optimizer=sgd", "optim.beta1=0.8"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, torch.optim.SGD)
    decayed, plain = optimizer.param_groups
    assert [p.ndim for p in decayed["params"]] == [4]  # the conv kernel only
    assert (decayed["weight_decay"], plain["weight_decay"]) == (config.optim.weight_decay, 0.0)
    assert decayed["nesterov"] and decayed["momentum"] == 0.8


def test_optimizers_are_fused_on_the_cpu() -> None:
    model = torch.nn.Linear(3, 2)
    for name in ("adamw", "sgd"):
        config = build_config("classifier", overrides=[f"optim.optimizer={name}"])
        assert build_optimizer(model, config).defaults["fused"] is True


def test_restored_moments_take_their_channels_last_parameters_layout() -> None:
    """A fused step on moments saved contiguous but restored beside channels-last
    weights must equal the step the uninterrupted optimizer takes."""
    config = build_config("classifier")

    def conv() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)

    def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        model(x.contiguous(memory_format=torch.channels_last)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    live = conv()
    live_optimizer = build_optimizer(live, config)
    step(live, live_optimizer)
    saved = snapshot(live_optimizer.state_dict())  # contiguous copies, as in a checkpoint
    assert saved["state"][0]["exp_avg"].is_contiguous()
    resumed = conv()
    resumed.load_state_dict(live.state_dict())
    resumed_optimizer = build_optimizer(resumed, config)
    load_optimizer_state(resumed_optimizer, saved)
    assert resumed_optimizer.state[resumed.weight]["exp_avg"].stride() == resumed.weight.stride()
    step(live, live_optimizer)
    step(resumed, resumed_optimizer)
    assert torch.equal(live.weight, resumed.weight)


@pytest.mark.parametrize(
    ("amp", "device", "expected"),
    [
        ("auto", "cpu", None),  # the default run is fp32 on every CPU
        ("bf16", "cpu", torch.bfloat16),
        ("fp16", "cpu", None),  # fp16 autocast is a CUDA feature
        ("off", "cpu", None),
        ("off", "cuda", None),
        ("bf16", "cuda", torch.bfloat16),
        ("fp16", "cuda", torch.float16),
        ("auto", "mps", None),
    ],
)
def test_autocast_dtype_per_device(amp: str, device: str, expected: torch.dtype | None) -> None:
    assert autocast_dtype(amp, torch.device(device)) == expected


def test_bf16_on_the_cpu_runs_the_forward_in_bf16_and_resumes_exactly(tmp_path) -> None:
    overrides = [*tiny_overrides(tmp_path, max_steps=8, every=4), "optim.amp=bf16"]
    config = build_config("classifier", overrides=overrides)
    trainer = build_trainer(config, LocalStore(tmp_path / "whole"), "whole", progress=False)
    seen: list[torch.dtype] = []
    trainer.model.conv1.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    trainer.fit()
    assert set(seen) >= {torch.bfloat16}  # training steps (evaluation runs in fp32)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())

    # Preempted after step 4 (the guard is set during the 4th training forward), resumed.
    store, guard = LocalStore(tmp_path / "cut"), PreemptionGuard(signals=())
    cut = build_trainer(config, store, "cut", guard=guard, progress=False)
    forwards: list[int] = []

    def preempt_at_four(module: torch.nn.Module, _inputs: object, _out: object) -> None:
        forwards.extend([1] if module.training else [])
        if len(forwards) == 4:
            guard.request("test")

    cut.model.register_forward_hook(preempt_at_four)
    assert cut.fit().status == "preempted" and committed_step(tmp_path / "cut", "cut") == 4
    assert run_training(config, store, "cut", progress=False).resumed_from == 4
    assert_bitwise_equal(
        final_weights(tmp_path / "cut", "cut"), final_weights(tmp_path / "whole", "whole")
    )


def test_training_without_a_validation_split(tmp_path) -> None:
    overrides = [*tiny_overrides(tmp_path, max_steps=4, every=2), "data.val_fraction=0.0"]
    config = build_config("classifier", overrides=overrides)
    result = run_training(config, LocalStore(tmp_path / "out"), "noval", progress=False)
    assert result.status == "completed" and result.metrics == {}
    assert committed_step(tmp_path / "out", "noval") == 4


def test_progressive_sizes_grow_in_multiples_of_32_over_the_ramp() -> None:
    config = build_config(
        "classifier",
        overrides=["data.image_size=128", "data.progressive_min_size=64"],
    )
    progress = [0.0, 0.25, 0.3, 0.5, 0.7, 0.75, 1.0]
    assert [train_image_size(p, config.data) for p in progress] == [64, 64, 64, 96, 128, 128, 128]
    fixed = build_config("classifier", overrides=["data.image_size=112"])
    assert {train_image_size(p, fixed.data) for p in progress} == {112}


def test_training_batches_take_the_size_of_their_epoch_also_after_resume(tmp_path) -> None:
    overrides = [*tiny_overrides(tmp_path, max_steps=40, every=40), "data.progressive_min_size=16"]
    batches = build_trainer(
        build_config("classifier", overrides=overrides), LocalStore(tmp_path), "g"
    ).batches
    per_epoch = batches.batches_per_epoch
    num_epochs = -(-40 // per_epoch)  # enough to cover the run's 40 steps
    epochs = [[batches.next()[0].shape for _ in range(per_epoch)] for _ in range(num_epochs)]
    assert epochs[0][0] == (8, 3, 16, 16) and epochs[-1][-1] == (8, 3, 32, 32)
    assert all(len(set(shapes)) == 1 for shapes in epochs)  # the size changes between epochs

    resumed = build_trainer(
        build_config("classifier", overrides=overrides), LocalStore(tmp_path), "h"
    )
    resumed.batches.load_state_dict({"epoch": num_epochs - 1, "consumed": 1})
    assert resumed.batches.next()[0].shape == epochs[-1][1]


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("classifier", ["data.image_size=64", "data.progressive_min_size=64"], "below image_size"),
        ("classifier", ["data.progressive_ramp=[0.8, 0.2]"], "0 <= start <= end <= 1"),
        ("dit", ["data.progressive_min_size=16"], "applies to the classifier only"),
    ],
)
def test_bad_progressive_settings_are_named(task: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(task, overrides=overrides)
