"""TinyDiT sample quality: x-prediction against v-prediction, same data, seed and budget.

Both runs train `configs/dit-cpu.toml` on oxford-cats-mini at 64 px with the same seed
and the same number of steps (the recipe's 3,400, sized for 20 minutes; 20.6 and 21.0
measured on the idle 2-core host of 2026-12-07), and differ only in dit.prediction. A classifier run judges them
(`tinycats eval DIT --judge`): class consistency and the Fréchet distance in the
judge's features, beside the floor (real train photos) and the ceiling (blurred mean
photo + noise). Then the x run's samplers: Euler and Heun at 10, 25 and 50 steps. Both
sample grids (same noise) go side by side into docs/dit-quality-64px-v-vs-x.png.

The figures use the test split's photos for the Fréchet distance; nothing here is
chosen on them. The recipe and its guidance scale were chosen by
benchmarks/dit_recipe_screen.py on val_loss and on samples judged without a test photo
(class consistency, and the Fréchet distance to train photos); the sampler is the
earlier recipe's Euler at 50 steps, not screened.

Training resumes (the runs are ordinary runs in --out), and each figure is kept in
<out>/dit_quality.json, so a stopped benchmark continues where it was.

    nice -n 10 python benchmarks/dit_quality.py --judge judge64 --judge-out /work/runs/shared \
        --out /work/runs/dit-quality-2
    python benchmarks/dit_quality.py ... --out /work/runs/dit-quality-seed1 --seed 1 \
        --grid /work/runs/dit-quality-seed1/grid.png        # another seed, docs untouched
    python benchmarks/dit_quality.py --smoke       # synthetic, 16 px, tiny runs (seconds)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from tinycats.config import build_config
from tinycats.errors import TinycatsError
from tinycats.storage import LocalStore, RunRegistry
from tinycats.storage.atomic import write_json_atomic
from tinycats.train import PreemptionGuard, TrainResult, claim_run, run_training
from tinycats.train.dit_quality import evaluate_dit
from tinycats.train.dit_task import sample_grid
from tinycats.train.inference import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "dit-cpu.toml"
GRID = ROOT / "docs" / "dit-quality-64px-v-vs-x.png"
SAMPLERS = [(sampler, steps) for sampler in ("euler", "heun") for steps in (10, 25, 50)]
SMOKE = [
    "data.source='synthetic'",
    "data.image_size=16",
    "data.synthetic_classes=4",
    "data.synthetic_per_class=16",
    "optim.batch_size=8",
    "optim.warmup_steps=2",
    "checkpoint.every_steps=1000",
    "dit.sample_steps=4",
]


def add_judge_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The options this benchmark and the recipe screen share: where the runs and the
    judge are, how many samples a figure takes, and the smoke mode."""
    parser.add_argument("--judge", help="the judge: a classifier run id or folder")
    parser.add_argument("--judge-out", type=Path, help="the judge's store (default: --out)")
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--n", type=int, default=240, help="samples per figure")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic runs (CI)")


def smoke_store(prefix: str) -> Path:
    """A temporary store holding a 10-step synthetic judge run `judge`, removed when the
    process exits (its checkpoints and the smoke runs' are ~170 MB)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    judge_config = build_config("classifier", overrides=[*SMOKE, "optim.max_steps=10"])
    run_training(judge_config, LocalStore(root), "judge", progress=False)
    return root


def finish_run(store: LocalStore, run_id: str, overrides: list[str]) -> TrainResult | None:
    """Train the recipe plus `overrides` as `run_id` to its last step, continuing it where
    it stopped; None when it had finished already."""
    with contextlib.suppress(TinycatsError):  # no record yet: a new run
        if RunRegistry(store).get(run_id).get("status") == "completed":
            return None
    config = build_config("dit", RECIPE, ["seed=0", *overrides])  # overrides may set another
    # Under the run's lock, as `tinycats train` does: a second copy of this benchmark (or a
    # CLI run of the same id) gets RunBusy instead of training the same run at once.
    with claim_run(store, "dit", run_id, "auto") as (plan, locked), PreemptionGuard() as guard:
        result = run_training(config, locked, run_id, resume=plan.resume, guard=guard)
    if result.status != "completed":
        raise SystemExit(f"{run_id} stopped at step {result.step}; run again to continue")
    return result


def train(prediction: str, store: LocalStore, overrides: list[str], state: dict) -> str:
    """Train (or resume, or find finished) the run of one prediction type; its id."""
    run_id = f"dit-{prediction}"
    start = time.perf_counter()
    result = finish_run(store, run_id, [*overrides, f"dit.prediction='{prediction}'"])
    if result is None:
        return run_id
    seconds = state.setdefault("train_seconds", {})
    seconds[run_id] = seconds.get(run_id, 0.0) + time.perf_counter() - start
    print(
        f"{run_id}: {result.status} at step {result.step}/{result.max_steps}, "
        f"{seconds[run_id] / 60:.1f} min in all ({seconds[run_id] / result.max_steps:.3f} "
        f"s/step), val_loss {result.metrics.get('val_loss', float('nan')):.4f}",
        flush=True,
    )
    return run_id


def judged(key: str, state: dict, save, **kwargs) -> dict:
    """The quality report `key` under this judge (computed once, kept in the state file)."""
    reports = state.setdefault("quality", {})
    key = f"{kwargs['judge'].run_id}:{key}"
    if key not in reports:
        reports[key] = evaluate_dit(**kwargs, record=False).to_dict()
        save()
    return reports[key]


def side_by_side(grids: dict[str, Image.Image]) -> Image.Image:
    """Grids next to one another, each under its title."""
    title, gap = 16, 12
    width = sum(g.width for g in grids.values()) + gap * (len(grids) - 1)
    canvas = Image.new("RGB", (width, title + max(g.height for g in grids.values())), "white")
    draw, left = ImageDraw.Draw(canvas), 0
    for name, grid in grids.items():
        draw.text((left + 4, 2), name, fill="black")
        canvas.paste(grid, (left, title))
        left += grid.width + gap
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_judge_arguments(parser, "tinycats-out/dit-quality")
    parser.add_argument("--seed", type=int, default=0, help="of both trainings and all sampling")
    parser.add_argument("--grid", type=Path, default=GRID, help="where the side-by-side grid goes")
    parser.add_argument(
        "--max-steps", type=int, help="a shorter screen than the recipe's budget (say so)"
    )
    args = parser.parse_args()

    overrides: list[str] = []
    n, samplers, per_class, grid_path = args.n, SAMPLERS, 6, args.grid
    if args.smoke:
        args.out, args.judge, args.judge_out = smoke_store("dit-quality-smoke-"), "judge", None
        overrides = [*SMOKE, "dit.preset=test", "dit.width=32", "dit.depth=1",
                     "dit.preview_per_class=0", "optim.max_steps=6"]  # fmt: skip
        n, samplers, per_class, grid_path = 8, [("euler", 2), ("heun", 2)], 2, args.out / "grid.png"
    elif args.judge is None:
        parser.error("--judge is required (a classifier run trained on the same data)")
    if args.max_steps:
        overrides.append(f"optim.max_steps={args.max_steps}")
    overrides.append(f"seed={args.seed}")

    store = LocalStore(args.out)
    state_path = args.out / "dit_quality.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}

    def save() -> None:
        write_json_atomic(state_path, state)

    runs = {p: train(p, store, overrides, state) for p in ("v", "x")}
    save()
    judge = load_trained_model(LocalStore(args.judge_out or args.out), args.judge)
    models = {p: load_trained_model(store, run_id, which="latest") for p, run_id in runs.items()}
    common = {"judge": judge, "store": store, "n": n, "seed": args.seed}
    recipe = next(iter(models.values())).config.dit  # both runs sample as the recipe says
    main_rows = {
        p: judged(f"{p}/{recipe.sampler}{recipe.sample_steps}", state, save, dit=m, **common)
        for p, m in models.items()
    }

    x, v = main_rows["x"], main_rows["v"]
    print(
        f"\njudge {x['judge']} (step {x['judge_step']}), {n} samples per row "
        f"({x['steps']} {x['sampler']} steps, cfg {x['cfg_scale']:g}) against {x['n_test']} "
        f"test photos at {x['image_size']} px; chance {1 / len(x['per_breed']):.1%}"
    )
    print(f"{'':42}{'consistency':>12}{'Fréchet':>10}")
    rows = [
        ("real test photos (judge's accuracy)", x["rows"]["real_test"]["consistency"], None),
        ("real train photos (floor)", *_pair(x["rows"]["real_train"])),
        (f"v-prediction, step {v['step']}", v["consistency"], v["frechet"]),
        (f"x-prediction, step {x['step']}", x["consistency"], x["frechet"]),
        ("mean photo, blurred + noise (ceiling)", *_pair(x["rows"]["trivial"])),
    ]
    for name, consistency, frechet in rows:
        fd = "" if frechet is None else f"{frechet:10.1f}"
        print(f"{name:42}{consistency:12.1%}{fd}")
    print(
        f"Fréchet x/v = {x['frechet'] / v['frechet']:.2f} (goal <= 0.5); "
        f"x consistency {x['consistency']:.1%} (goal >= 30%)"
    )
    for p in ("v", "x"):
        breeds = "  ".join(f"{b} {s:.0%}" for b, s in main_rows[p]["per_breed"].items())
        print(f"per breed, {p}: {breeds}")
    print(x["inception_skipped"] or f"standard Inception FID: x {x['inception_fid']:.1f}")

    grids = {
        f"{p}-prediction, step {main_rows[p]['step']}": sample_grid(
            m.model,
            m.classes,
            list(range(len(m.classes))),
            per_class=per_class,
            steps=m.config.dit.sample_steps,
            cfg_scale=m.config.dit.cfg_scale,
            sampler=m.config.dit.sampler,
            seed=args.seed,
            device=m.device,
        )
        for p, m in models.items()
    }
    side_by_side(grids).save(grid_path)
    print(f"\ngrids (same noise): {grid_path}")

    print("\nsamplers (x-prediction):")
    for sampler, steps in samplers:
        row = judged(
            f"x/{sampler}{steps}", state, save, dit=models["x"], steps=steps, sampler=sampler,
            **common,
        )  # fmt: skip
        print(
            f"  {sampler:5} {steps:3} steps: consistency {row['consistency']:6.1%}  "
            f"Fréchet {row['frechet']:8.1f}"
        )


def _pair(row: dict) -> tuple[float, float]:
    return row["consistency"], row["frechet"]


if __name__ == "__main__":
    main()
