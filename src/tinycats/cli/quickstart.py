"""`tinycats quickstart`: everything tinycats does, small, in a few minutes on a laptop CPU.

No account, no GPU, no network: it prepares the real photos of oxford-cats-mini when
they are at ../shared/data (else synthetic images, and says so), trains a small
classifier and a small DiT, evaluates the classifier, samples a grid from the DiT,
writes both runs' reports, and ends with a table of what it made and where.

Every stage is resumable: the two runs have fixed ids, so Ctrl-C checkpoints and stops
(a second Ctrl-C stops at once; the last checkpoint stays), and running the command
again continues the runs from their checkpoints and skips what is already done.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tinycats.cli.common import DEFAULT_OUT_PATH, OutOption, console

SHARED_PHOTOS = Path("../shared/data/oxford-cats-mini")
"""Where the checkout's sibling `shared/` keeps the real photos (as configs/ name them)."""

RUNS = {"classifier": "quickstart-classifier", "dit": "quickstart-dit"}
CLASSIFIER_RUN, DIT_RUN = RUNS["classifier"], RUNS["dit"]

CLASSIFIER = [
    "data.image_size=64",
    "optim.batch_size=32",
    "optim.max_steps=240",
    "optim.warmup_steps=20",
    "optim.lr=0.002",
    "checkpoint.every_steps=60",
    "tracking.log_every=10",
]
"""A ResNet-18 from scratch at 64 px: a couple of minutes on two cores."""

DIT = [
    "data.image_size=32",
    "dit.preset=test",
    "dit.preview_per_class=2",
    "dit.sample_steps=25",
    "optim.batch_size=32",
    "optim.max_steps=300",
    "checkpoint.every_steps=75",
    "tracking.log_every=10",
]
"""The test-preset TinyDiT (about a million parameters) at 32 px, a preview grid per checkpoint."""

RECIPES = {"classifier": CLASSIFIER, "dit": DIT}
GRID_PER_CLASS = 6


def quickstart_command(
    out: OutOption = DEFAULT_OUT_PATH,
    data: Annotated[
        Path | None,
        typer.Option("--data", help=f"Photos in Oxford layout (default: {SHARED_PHOTOS})."),
    ] = None,
) -> None:
    """Prepare data, train a classifier and a DiT, evaluate, sample, report: a few minutes on
    a CPU, no account or network. Ctrl-C stops resumably; run it again to continue."""
    from tinycats.storage import LocalStore

    store = LocalStore(out)
    source = _source(data)
    started, cpu = time.perf_counter(), time.process_time()
    made: list[tuple[str, str]] = []
    stages = (
        ("prepare the data", lambda: _prepare(store, source)),
        ("train the classifier", lambda: _train(store, "classifier", source)),
        ("evaluate it on the test split", lambda: _evaluate(store)),
        ("train the DiT", lambda: _train(store, "dit", source)),
        ("sample a grid of cats", lambda: _sample(store)),
        ("write the reports", lambda: _reports(store)),
    )
    for number, (title, stage) in enumerate(stages, 1):
        console.rule(f"[bold]{number}/{len(stages)} {title}", align="left")
        try:
            result = stage()
        except KeyboardInterrupt:
            result = None
        if result is None:  # stopped by Ctrl-C: the runs are checkpointed
            console.print(
                "[bold]stopped[/]: what is done stays done and the runs are checkpointed; "
                "run `tinycats quickstart` again to continue",
                highlight=False,
            )
            raise typer.Exit(130)
        made += result
    _summary(store, made, time.perf_counter() - started, time.process_time() - cpu)


def _source(data: Path | None) -> str:
    """The photos to use, or "synthetic" (said out loud) when there are none."""
    from tinycats.errors import DataError

    if data is not None:
        if not data.is_dir():
            raise DataError(f"--data {data} is not a folder; pass a folder in Oxford layout")
        return str(data)
    if SHARED_PHOTOS.is_dir():
        console.print(f"real photos: {SHARED_PHOTOS}", highlight=False)
        return str(SHARED_PHOTOS)
    console.print(
        f"[yellow]no photos at {SHARED_PHOTOS}[/]: training on synthetic images (coloured "
        "shapes, one class per shape) instead; pass --data DIR for a folder in Oxford layout",
        highlight=False,
    )
    return "synthetic"


def _recipe(task: str, source: str, saved: dict[str, Any] | None = None) -> Any:
    """The run's config: its recipe on the photos, over its saved config when resumed."""
    from tinycats.config import build_config

    overrides = [*RECIPES[task], f"data.source={json.dumps(source)}"]
    return build_config(task, overrides=overrides, base=saved)


def _prepare(store: Any, source: str) -> list[tuple[str, str]]:
    """Decode the photos once into shards for each run's resolution (reused when present)."""
    from tinycats.data.prepare import prepare_dataset, resolve_data_root

    made = []
    for task in RUNS:
        data = _recipe(task, source).data
        made.append(
            (f"{task} data", str(prepare_dataset(data, resolve_data_root(data, store.root))))
        )
    return made


def _train(store: Any, task: str, source: str) -> list[tuple[str, str]] | None:
    """Train one of the two runs, continue it, or skip it when it is complete; None when
    Ctrl-C stopped it (checkpointed)."""
    from tinycats.storage.layout import find_run_dir
    from tinycats.train import PreemptionGuard, claim_run, run_training

    run_id = RUNS[task]
    record = _record(store, run_id)
    max_steps = _recipe(task, source).optim.max_steps
    if record.get("status") == "completed" and record.get("step") == max_steps:
        console.print(f"{run_id}: done already (step {record['step']})", highlight=False)
        return [(f"{task} run", str(find_run_dir(store, run_id, task)))]
    with claim_run(store, task, run_id, "auto") as (plan, locked):
        config = _recipe(task, source, plan.saved_config)
        console.print(f"{run_id}: {plan.reason}", highlight=False)
        with PreemptionGuard() as guard:
            result = run_training(config, locked, run_id, resume=plan.resume, guard=guard)
    if result.status != "completed":
        return None
    metrics = "  ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    console.print(
        f"{run_id}: step {result.step} in {result.elapsed_seconds:.0f} s  {metrics}",
        highlight=False,
    )
    return [(f"{task} run", str(find_run_dir(store, run_id, task)))]


def _record(store: Any, run_id: str) -> dict[str, Any]:
    from tinycats.errors import TinycatsError
    from tinycats.storage import RunRegistry

    try:
        return RunRegistry(store).get(run_id)
    except TinycatsError:
        return {}


def _evaluate(store: Any) -> list[tuple[str, str]]:
    """Top-1/top-3, per-class accuracy and the confusion matrix of the best checkpoint on
    the test split (once: a rerun with its figures recorded skips it)."""
    from tinycats.train.evaluation import evaluate_classifier
    from tinycats.train.inference import load_trained_model

    trained = load_trained_model(store, CLASSIFIER_RUN)  # its best checkpoint, as `eval`
    recorded = (_record(store, CLASSIFIER_RUN).get("eval") or {}).get("test") or {}
    report = store.root / "reports" / CLASSIFIER_RUN / "eval_test.json"
    if recorded.get("step") != trained.info.step or not report.is_file():
        result = evaluate_classifier(trained, store, split="test")
        recorded = {"top1": result.top1, "top3": result.top3, "n": result.n}
    console.print(
        f"test split: top-1 {recorded['top1']:.1%}  top-3 {recorded['top3']:.1%} "
        f"on {recorded['n']} images",
        highlight=False,
    )
    return [
        ("evaluation", str(report)),
        ("confusion matrix", str(report.with_name("confusion_test.png"))),
    ]


def _sample(store: Any) -> list[tuple[str, str]]:
    """A labelled grid, one row per class, from the DiT's last checkpoint."""
    from tinycats.train.dit_task import every_class_grid
    from tinycats.train.inference import load_trained_model

    path = store.root / "samples" / DIT_RUN / "quickstart-grid.png"
    grid = every_class_grid(load_trained_model(store, DIT_RUN), GRID_PER_CLASS)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    console.print(f"wrote {path}", highlight=False)
    return [("sample grid", str(path))]


def _reports(store: Any) -> list[tuple[str, str]]:
    from tinycats.report import write_report

    made = []
    for run_id in (CLASSIFIER_RUN, DIT_RUN):
        path = write_report(store, run_id)
        console.print(f"wrote {path}", highlight=False)
        made.append((f"report of {run_id}", str(path)))
    return made


def _summary(store: Any, made: list[tuple[str, str]], seconds: float, cpu: float) -> None:
    from rich.table import Column, Table

    title = f"made in {seconds:.0f} s ({cpu:.0f} s of CPU time) under {store.root}"
    table = Table("what", Column("where", overflow="fold"), title=title)
    for what, where in made:
        table.add_row(what, where)
    console.print(table)
    console.print(
        "next:\n"
        f"  open {store.root / 'reports' / CLASSIFIER_RUN / 'report.html'} in a browser\n"
        f"  tinycats predict {CLASSIFIER_RUN} photo.jpg          # breeds of your cat\n"
        f"  tinycats sample {DIT_RUN} --breed all -o cats.png   # more cats\n"
        "  tinycats train classifier --config configs/classifier-cpu.toml   # ~60% top-1, ~15 min\n"
        "  tinycats cloud train classifier --config configs/classifier-gpu.toml   # on Modal",
        highlight=False,
    )
