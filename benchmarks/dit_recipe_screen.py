"""TinyDiT recipe screen: short runs of candidate recipes, judged without the test split.

Each candidate is configs/dit-cpu.toml plus a few overrides, trained for --steps (600
by default: ~3.5 minutes on the idle 2-core host) with the same seed and data. Three
figures choose between them, none of which looks at a test photo:

- val_loss: the flow loss on the validation split (comparable only between candidates
  that share the time distribution and the noise scale, since both weight the loss);
- class consistency: a judge's top-1 on --n generated samples against the breed asked
  for (a classifier trained on the train split; no real photo is involved);
- Fréchet distance in the judge's features between the samples and --n real *train*
  photos (how far the samples are from the data the DiT was fit to).

Also wall-clock seconds per step (from the run record), since a wider model fits fewer
steps into the 20-minute budget. Each candidate is judged at every guidance scale in
--cfg. With --run the sampling of one finished run is screened instead: guidance
scales, and with --raw its raw weights beside the EMA's.

    python benchmarks/dit_recipe_screen.py --judge judge64 --judge-out /work/runs/shared \
        --out /work/runs/screen
    python benchmarks/dit_recipe_screen.py --judge judge64 --judge-out /work/runs/shared \
        --out /work/runs/dit-quality --run dit-x --cfg 1.5,3,4.5,6
    python benchmarks/dit_recipe_screen.py --smoke        # synthetic, 16 px (seconds)

Figures are kept in <out>/recipe_screen.json, so a stopped screen continues.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

import torch

from dit_quality import SMOKE as QUALITY_SMOKE  # this folder's sibling benchmark
from dit_quality import add_judge_arguments, finish_run, smoke_store
from tinycats.storage import LocalStore, RunRegistry
from tinycats.storage.atomic import write_json_atomic
from tinycats.train.dit_quality import frechet_distances, generate, judge_accuracy, load_split
from tinycats.train.inference import TrainedModel, load_trained_model
from tinycats.train.judge import JudgeFeatures, class_map

SCREEN = ["dit.preview_per_class=0"]  # no grids: the figures below judge the samples
CANDIDATES: dict[str, list[str]] = {
    # the learning rate around the recipe's 5e-4 (ids as the first screen named them)
    "lr0.0005": ["optim.lr=0.0005"],
    "lr0.001": ["optim.lr=0.001"],
    "lr0.00025": ["optim.lr=0.00025"],
    # one change at a time from lr 1e-3
    "tmean0": ["optim.lr=0.001", "dit.logit_normal_mean=0.0"],
    "deep8": ["optim.lr=0.001", "dit.depth=8"],
    "patch4": [
        "optim.lr=0.001",
        "dit.patch_size=4",
        "dit.width=128",
        "dit.depth=4",
        "dit.heads=4",
    ],
    "cdrop0.2": ["optim.lr=0.001", "dit.class_dropout=0.2"],
}
SMOKE = [*QUALITY_SMOKE, "dit.preset=test", "dit.width=32", "dit.depth=1"]


def seconds_per_step(record: dict) -> float | None:
    """Wall clock per step of a run trained in one attempt (None after a resume)."""
    if record.get("attempts") != 1:
        return None
    span = datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(record["started_at"])
    return span.total_seconds() / record["step"]


def train_photos(dit: TrainedModel, store: LocalStore, n: int) -> torch.Tensor:
    """n real train photos (a fixed draw) at the DiT's resolution: the distance's reference."""
    photos, _, _ = load_split(dit, store, "train", None)
    return photos[torch.randperm(len(photos), generator=torch.Generator().manual_seed(1))[:n]]


def judge_samples(
    dit: TrainedModel, judge: TrainedModel, reference: torch.Tensor, *, cfg_scale: float
) -> dict[str, float]:
    """Class consistency of as many samples as `reference` holds, and their Fréchet
    distance to those real photos."""
    labels = torch.arange(len(reference)) % len(dit.classes)
    config = dit.config.dit
    samples = generate(
        dit, labels, steps=config.sample_steps, sampler=config.sampler, cfg_scale=cfg_scale, seed=0
    )
    features = JudgeFeatures(judge)
    correct = judge_accuracy(features, samples, class_map(judge, dit)[labels])
    frechet = frechet_distances(features, reference, {"samples": samples})
    return {"consistency": correct.float().mean().item(), "frechet_train": frechet["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_judge_arguments(parser, "tinycats-out/dit-screen")
    parser.add_argument("--steps", type=int, default=600, help="training steps a candidate")
    parser.add_argument("--only", help="comma-separated candidates (default: all)")
    parser.add_argument("--run", help="screen the sampling of this finished run instead")
    parser.add_argument("--cfg", default="3", help="guidance scales, comma-separated")
    parser.add_argument("--raw", action="store_true", help="--run's raw weights beside EMA's")
    args = parser.parse_args()

    candidates = {k: v for k, v in CANDIDATES.items() if not args.only or k in args.only.split(",")}
    overrides: list[str] = []
    if args.smoke:
        args.out, args.judge, args.judge_out = smoke_store("dit-screen-smoke-"), "judge", None
        args.n = 8
        args.steps, overrides = 4, SMOKE
        candidates = {k: candidates[k] for k in ("lr0.0005", "lr0.001")}
    elif args.judge is None:
        parser.error("--judge is required (a classifier run trained on the same data)")
    base = [
        *overrides,
        *SCREEN,
        f"optim.max_steps={args.steps}",
        f"checkpoint.every_steps={args.steps}",
    ]

    store = LocalStore(args.out)
    judge = load_trained_model(LocalStore(args.judge_out or args.out), args.judge)
    state_path = args.out / "recipe_screen.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    print(f"judge {judge.run_id} (step {judge.info.step}), {args.n} samples a row")
    scales = [float(c) for c in args.cfg.split(",")]

    references: dict[int, torch.Tensor] = {}  # by image size: every candidate shares them

    def judged(key: str, dit: TrainedModel, cfg: float) -> dict[str, float]:
        if key not in state:
            size = dit.model.args.image_size
            if size not in references:
                references[size] = train_photos(dit, store, args.n)
            state[key] = judge_samples(dit, judge, references[size], cfg_scale=cfg)
            write_json_atomic(state_path, state)
        return state[key]

    if args.run:
        print(f"{'sampling of ' + args.run:34}{'consistency':>12}{'Fréchet(train)':>16}")
        for weights in ("ema", "model") if args.raw else ("ema",):
            dit = load_trained_model(store, args.run, which="latest", use_ema=weights == "ema")
            for cfg in scales:
                key = f"{args.run}@{dit.info.step}/{weights}/cfg{cfg:g}/{judge.run_id}/{args.n}"
                row = judged(key, dit, cfg)
                name = f"{weights} weights, cfg {cfg:g}"
                print(f"{name:34}{row['consistency']:12.1%}{row['frechet_train']:16.2f}")
        return

    print(f"{'candidate, ' + str(args.steps) + ' steps':26}{'s/step':>8}{'val_loss':>10}"
          f"{'cfg':>6}{'consistency':>13}{'Fréchet(train)':>16}")  # fmt: skip
    for name, overrides in candidates.items():
        finish_run(store, name, [*base, *overrides])
        record = RunRegistry(store).get(name)
        pace = seconds_per_step(record)
        dit = load_trained_model(store, name, which="latest")
        for cfg in scales:
            row = judged(f"{name}@{record['step']}/cfg{cfg:g}/{judge.run_id}/{args.n}", dit, cfg)
            print(
                f"{name:26}{'' if pace is None else f'{pace:.3f}':>8}"
                f"{record['metrics']['val_loss']:10.4f}{cfg:6g}{row['consistency']:13.1%}"
                f"{row['frechet_train']:16.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
