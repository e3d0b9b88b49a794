"""Use a trained model: `eval`, `predict` and `sample` (a run, a checkpoint or an exported folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    BreedOption,
    GuidanceOption,
    JsonOption,
    OutOption,
    PerClassOption,
    RefArgument,
    SampleOutputOption,
    SeedOption,
    SplitOption,
    StepsOption,
    console,
    print_json,
    print_table,
)


def load_for(out: Path, ref: str, task: str):
    """The trained model `ref` names, which must be of `task` (else one clear line)."""
    from tinycats.errors import TinycatsError
    from tinycats.storage import LocalStore
    from tinycats.train.inference import load_trained_model

    trained = load_trained_model(LocalStore(out), ref)
    if trained.config.task != task:
        raise TinycatsError(
            f"{ref} is a {trained.config.task} checkpoint; this command needs a {task} one"
        )
    return trained


def eval_command(
    ref: RefArgument,
    data: Annotated[
        str | None, typer.Option("--data", help="synthetic | oxford | PATH (default: the run's).")
    ] = None,
    split: SplitOption = "test",
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size",
            min=16,
            help="Evaluate at this resolution (default: the run's classifier.eval_image_size).",
        ),
    ] = None,
    crop: Annotated[
        float | None,
        typer.Option(
            "--crop",
            min=0.5,
            max=1.0,
            help="Evaluate on this central fraction of each photo (default: the run's "
            "classifier.eval_crop).",
        ),
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Average each image with its mirror (default: the run's classifier.tta_hflip).",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="A DiT run is judged by this classifier run (id or folder): class "
            "consistency and Fréchet distance of its samples.",
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", help="DiT: samples to judge (classes in turn).")] = 240,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="DiT: ODE steps (default: the run's).")
    ] = None,
    sampler: Annotated[
        str | None, typer.Option("--sampler", help="DiT: euler | heun (default: the run's).")
    ] = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="DiT: guidance scale (default: the run's).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="DiT: seed of the samples.")] = 0,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Evaluate a classifier (top-1/top-3, per-class accuracy, confusion matrix), or the
    samples of a DiT run with --judge CLASSIFIER_RUN."""
    from tinycats.errors import ConfigError
    from tinycats.storage import LocalStore
    from tinycats.train.evaluation import evaluate_classifier
    from tinycats.train.inference import load_trained_model

    trained = load_trained_model(LocalStore(out), ref)
    if trained.config.task == "dit":
        if judge is None:
            raise ConfigError(
                f"{ref} is a DiT run; pass --judge CLASSIFIER_RUN to judge its samples"
            )
        from tinycats.cli.quality import judge_command

        judge_command(trained, judge, n, steps, sampler, cfg, seed, data, out, json_)
        return
    if judge is not None:
        raise ConfigError(f"{ref} is a {trained.config.task} run; --judge applies to a DiT run")
    report = evaluate_classifier(
        trained,
        LocalStore(out),
        data=data,
        split=split,
        image_size=image_size,
        crop=crop,
        hflip_tta=tta,
    )
    if json_:
        print_json(report.to_dict())
        return
    numbers = [str(i) for i in range(len(report.classes))]  # 12 breed names do not fit 80 columns
    print_table(
        ("true \\ predicted", *numbers, "acc"),
        [
            (f"{index} {name}", *row, f"{report.per_class[name]:.2f}")
            for index, (name, row) in enumerate(zip(report.classes, report.confusion, strict=True))
        ],
        title=f"{report.run_id} · {report.split} · {report.n} images · {report.data}",
        right=(*numbers, "acc"),
    )
    console.print(
        f"top-1 {report.top1:.4f}  top-3 {report.top3:.4f}  ({trained.weights} weights, "
        f"{report.image_size} px, central {report.crop:.0%}"
        f"{', mirror TTA' if report.tta_hflip else ''})\n"
        f"confusion matrix: {report.confusion_png}",
        highlight=False,
    )


def predict_command(
    ref: RefArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files (any format PIL reads).")],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Breeds to show per image.")] = 3,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Top-k breeds with probabilities for each image."""
    from tinycats.train.evaluation import predict_images

    results = predict_images(load_for(out, ref, "classifier"), images, top_k)
    if json_:
        print_json(results)
        return
    for result in results:
        ranked = ", ".join(f"{t['breed']} {t['probability']:.1%}" for t in result["top"])
        console.print(f"{result['image']}: {ranked}", highlight=False)


def sample_command(
    ref: RefArgument,
    output: SampleOutputOption = Path("grid.png"),
    breed: BreedOption = "all",
    n: PerClassOption = 8,
    cfg: GuidanceOption = None,
    steps: StepsOption = None,
    sampler: Annotated[str | None, typer.Option("--sampler", help="euler | heun")] = None,
    seed: SeedOption = 0,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Draw cats of a breed (or all breeds) with the DiT: a labelled grid, one row per breed."""
    from tinycats.errors import ConfigError
    from tinycats.train.dit_task import sample_grid

    trained = load_for(out, ref, "dit")
    dit = trained.config.dit
    if breed == "all":
        indices = list(range(len(trained.classes)))
    elif breed in trained.classes:
        indices = [trained.classes.index(breed)]
    else:
        raise ConfigError(
            f"unknown breed {breed!r}; choose one of {', '.join(trained.classes)}, all"
        )
    if sampler not in (None, "euler", "heun"):
        raise ConfigError(f"unknown sampler {sampler!r}; choose euler or heun")
    grid = sample_grid(
        trained.model,
        trained.classes,
        indices,
        per_class=n,
        steps=steps or dit.sample_steps,
        cfg_scale=dit.cfg_scale if cfg is None else cfg,
        sampler=sampler or dit.sampler,
        seed=seed,
        device=trained.device,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    if json_:
        print_json({"output": str(output), "rows": [trained.classes[i] for i in indices], "n": n})
    else:
        console.print(f"wrote {output} ({len(indices)} rows × {n})", highlight=False)


def load_pair(out: Path, ref: str, dit: str | None) -> dict:
    """{task: model} for `ref` (a classifier or a DiT) and an optional `--dit` run."""
    from tinycats.errors import ConfigError
    from tinycats.storage import LocalStore
    from tinycats.train.inference import load_trained_model

    first = load_trained_model(LocalStore(out), ref)
    models = {first.config.task: first}
    if dit is not None:
        if first.config.task == "dit":
            raise ConfigError(f"{ref} is a DiT already; pass a classifier run before --dit")
        models["dit"] = load_for(out, dit, "dit")
    return models
