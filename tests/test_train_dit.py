"""The DiT: memorisation end to end, and on the shared engine exact resume and preview grids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tinycats.config import build_config
from tinycats.data.synthetic import render_synthetic
from tinycats.models.dit import DiTArgs, TinyDiT
from tinycats.models.flow import sample, to_uint8
from tinycats.storage import LocalStore
from tinycats.train import PreemptionGuard, run_training
from tinycats.train.dit_quality import evaluate_dit
from tinycats.train.dit_task import DiTTask
from tinycats.train.engine import Trainer
from tinycats.train.inference import load_trained_model

SYNTHETIC = ["data.image_size=32", "data.synthetic_classes=4", "data.synthetic_per_class=32"]


def dit_config(tmp_path: Path, *extra: str):
    return build_config(
        "dit",
        overrides=[
            *SYNTHETIC,
            f"data.dir={json.dumps(str(tmp_path / 'data'))}",
            "dit.preset=test",
            "dit.width=64",
            "dit.depth=2",
            "dit.preview_per_class=0",
            "optim.batch_size=16",
            *extra,
        ],
    )


def final_weights(store_root: Path, run_id: str) -> dict[str, torch.Tensor]:
    [latest] = store_root.glob(f"checkpoints/dit/*/{run_id}/latest.json")
    step_dir = latest.parent / json.loads(latest.read_text())["dir"]
    return {
        f"{name}.{k}": v
        for name in ("model", "ema")
        for k, v in load_file(step_dir / f"{name}.safetensors").items()
    }


def test_dit_resume_after_preemption_is_bitwise_exact(tmp_path, monkeypatch) -> None:
    config = dit_config(tmp_path, "optim.max_steps=12", "checkpoint.every_steps=4")
    store = LocalStore(tmp_path / "out")
    run_training(config, store, "whole", progress=False)

    guard = PreemptionGuard(signals=())
    original = Trainer.train_step

    def step_then_preempt(self: Trainer):
        result = original(self)
        if self.step == 7:  # between two cadence checkpoints: the preemption writes its own
            guard.request("SIGTERM")
        return result

    monkeypatch.setattr(Trainer, "train_step", step_then_preempt)
    first = run_training(config, store, "cut", guard=guard, progress=False)
    assert (first.status, first.step) == ("preempted", 7)
    monkeypatch.setattr(Trainer, "train_step", original)
    second = run_training(config, store, "cut", progress=False)
    assert (second.status, second.resumed_from, second.step) == ("completed", 7, 12)

    expected, actual = final_weights(store.root, "whole"), final_weights(store.root, "cut")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_checkpoints_write_a_fixed_seed_preview_grid(tmp_path) -> None:
    config = dit_config(
        tmp_path,
        "optim.max_steps=4",
        "checkpoint.every_steps=2",
        "dit.preview_per_class=2",
        "dit.sample_steps=4",
    )
    run_training(config, LocalStore(tmp_path / "out"), "grid", progress=False)
    grids = sorted((tmp_path / "out" / "samples" / "grid").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_00000002.png", "step_00000004.png"]
    with Image.open(grids[-1]) as image:
        assert image.height >= 4 * 32 and image.width >= 2 * 32  # 4 class rows × 2 samples


def class_consistency(tmp_path: Path, dit_steps: int, width: int, depth: int) -> float:
    """Share of DiT samples that a classifier trained on the same data puts in the asked class
    (`tinycats eval --judge`'s class consistency)."""
    store = LocalStore(tmp_path / "out")
    data_dir = f"data.dir={json.dumps(str(tmp_path / 'data'))}"
    judge_config = build_config(
        "classifier",
        overrides=[
            *SYNTHETIC,
            data_dir,
            "optim.batch_size=16",
            "optim.max_steps=60",
            "optim.warmup_steps=5",
            "optim.lr=0.002",
            "checkpoint.every_steps=60",
        ],
    )
    judge_result = run_training(judge_config, store, "judge", progress=False)
    assert judge_result.metrics["val_acc"] >= 0.95, judge_result.metrics

    dit = dit_config(
        tmp_path,
        f"dit.width={width}",
        f"dit.depth={depth}",
        f"optim.max_steps={dit_steps}",
        f"checkpoint.every_steps={dit_steps}",
        "optim.batch_size=32",
        "optim.lr=0.001",
        "optim.warmup_steps=20",
    )
    run_training(dit, store, "gen", progress=False)
    report = evaluate_dit(
        load_trained_model(store, "gen", which="latest"),
        load_trained_model(store, "judge"),
        store,
        n=32,
        steps=20,
        cfg_scale=3.0,
        record=False,
    )
    assert report.rows["real_test"]["consistency"] >= 0.95, report.rows  # the judge is right
    return report.consistency


def test_a_resumed_run_keeps_the_prediction_type_it_started_with(tmp_path, caplog) -> None:
    store = LocalStore(tmp_path / "out")
    first = dit_config(tmp_path, "dit.prediction='v'", "optim.max_steps=2")
    run_training(first, store, "run", progress=False)
    # Resumed under today's default (x) and a new noise scale: the checkpoint's model wins.
    later = dit_config(tmp_path, "dit.noise_scale=2.0", "optim.max_steps=4")
    assert later.dit.prediction == "x"
    with caplog.at_level("WARNING"):
        result = run_training(later, store, "run", progress=False)
    assert (result.resumed_from, result.step) == (2, 4)
    assert "dit.prediction='v'" in caplog.text and "new runs only" in caplog.text
    resumed = load_trained_model(store, "run", which="latest")  # its model_args and config
    assert resumed.info.step == 4
    assert (resumed.model.prediction, resumed.model.noise_scale) == ("v", 1.0)
    assert (resumed.config.dit.prediction, resumed.config.dit.noise_scale) == ("v", 1.0)


def _twelve_images(size: int) -> torch.Tensor:
    """One synthetic image per class, (12, 3, size, size) uint8 (no dataset needed)."""
    return torch.stack(
        [torch.from_numpy(render_synthetic(c, 0, size, seed=0)).permute(2, 0, 1) for c in range(12)]
    )


@pytest.mark.parametrize("prediction", ["x", "v"])
def test_dit_memorises_one_image_per_class(prediction: str) -> None:
    """End to end on the real pieces: the task's uint8 → [-1, 1] scaling and loss, both
    samplers with guidance, patchify/unpatchify, and to_uint8 back. Twelve images, one
    per class, at 32 px; after 500 steps each class's guided sample must be nearer its
    own image than any other and near it in absolute terms. Breaking any one of those
    pieces on purpose (loss time direction, the x→v conversion's sign in the samplers,
    the guidance sign, unpatchify's axis order, the task's scaling) failed it here.

    Measured here (500 steps, ~12 s each on a loaded CPU): mean own MSE 0.064 (x) and
    0.080 (v) on [-1, 1]; the images are 0.10 to 0.43 (mean) apart from each other.
    """
    images, labels = _twelve_images(32), torch.arange(12)
    torch.manual_seed(0)
    args = DiTArgs(32, patch_size=4, width=64, depth=2, heads=4, num_classes=12)
    model = TinyDiT(dataclasses.replace(args, prediction=prediction))
    task = DiTTask(build_config("dit"))  # the defaults: JiT's time sampling, 10% label drop
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(500):
        loss, _ = task.loss(model, images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    real = images.float() / 127.5 - 1  # (12, 3, 32, 32)
    for sampler, steps in (("euler", 20), ("heun", 10)):
        generator = torch.Generator().manual_seed(0)
        out = sample(
            model,
            labels,
            steps=steps,
            cfg_scale=2.0,
            sampler=sampler,
            generator=generator,
            image_shape=(3, 32, 32),
        )
        drawn = to_uint8(out).float() / 127.5 - 1
        mse = ((drawn[:, None] - real[None]) ** 2).mean(dim=(2, 3, 4))  # (sample, image)
        own = mse.diag()
        assert torch.equal(mse.argmin(dim=1), labels), (sampler, mse.argmin(dim=1))
        assert own.mean() < 0.12 and own.max() < 0.25, (sampler, own)


@pytest.mark.slow
def test_dit_samples_are_their_class_at_least_90_percent(tmp_path) -> None:
    # 600 steps scored 81% (26 of 32); 1,500 steps scored 93.75% (30 of 32) here.
    score = class_consistency(tmp_path, dit_steps=1500, width=128, depth=4)
    assert score >= 0.90, score
