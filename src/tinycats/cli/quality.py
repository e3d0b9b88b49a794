"""`tinycats eval DIT_RUN --judge CLASSIFIER_RUN`: the sample-quality table of a DiT run."""

from __future__ import annotations

from pathlib import Path

from tinycats.cli.common import console, print_json, print_table


def judge_command(
    dit,
    judge_ref: str,
    n: int,
    steps: int | None,
    sampler: str | None,
    cfg: float | None,
    seed: int,
    data: str | None,
    out: Path,
    json_: bool,
) -> None:
    """Judge the samples of `dit` (a loaded DiT run) by the classifier run `judge_ref`."""
    from tinycats.errors import ConfigError, TinycatsError
    from tinycats.storage import LocalStore
    from tinycats.train.dit_quality import check_sample_count, evaluate_dit
    from tinycats.train.inference import load_trained_model

    check_sample_count(n)
    if sampler not in (None, "euler", "heun"):
        raise ConfigError(f"unknown sampler {sampler!r}; choose euler or heun")
    judge = load_trained_model(LocalStore(out), judge_ref)
    if judge.config.task != "classifier":
        raise TinycatsError(
            f"--judge {judge_ref} is a {judge.config.task} run; pass a classifier run"
        )
    try:
        import torchmetrics  # noqa: F401
    except ModuleNotFoundError:
        raise TinycatsError(
            "judging samples needs torchmetrics; pip install -e '.[quality]'"
        ) from None
    report = evaluate_dit(
        dit,
        judge,
        LocalStore(out),
        n=n,
        steps=steps,
        sampler=sampler,
        cfg_scale=cfg,
        seed=seed,
        data=data,
    )
    if json_:
        print_json(report.to_dict())
        return
    from rich.text import Text

    rows = report.rows
    generated = ("generated", f"{report.consistency:.1%}", f"{report.frechet:.1f}")
    print_table(
        ("images", "class consistency", "Fréchet (judge features)"),
        [
            (
                "real test photos (the judge's own accuracy)",
                f"{rows['real_test']['consistency']:.1%}",
                "-",
            ),
            ("real train photos (floor)", *_cells(rows["real_train"])),
            tuple(Text(cell, style="bold") for cell in generated),
            ("mean photo, blurred + noise (ceiling)", *_cells(rows["trivial"])),
        ],
        title=f"{report.run_id} (step {report.step}) judged by {report.judge} (step "
        f"{report.judge_step}) · {report.n} samples, {report.steps} {report.sampler} steps, "
        f"cfg {report.cfg_scale:g} · against {report.n_test} test photos at "
        f"{report.image_size} px",
        right=("class consistency", "Fréchet (judge features)"),
    )
    breeds = "  ".join(f"{b} {v:.0%}" for b, v in report.per_breed.items())
    console.print(f"per breed (chance {1 / len(report.per_breed):.0%}): {breeds}", highlight=False)
    if report.inception_fid is not None:
        console.print(f"standard Inception FID: {report.inception_fid:.1f}", highlight=False)
    else:
        console.print(report.inception_skipped, highlight=False)


def _cells(row: dict[str, float]) -> tuple[str, str]:
    return f"{row['consistency']:.1%}", f"{row['frechet']:.1f}"
