"""`tinycats train classifier|dit`: a training run on the local Store, resumable."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    ConfigOption,
    JsonOption,
    OutOption,
    SetOption,
    console,
    print_json,
)

app = typer.Typer(
    help="Train a model; interrupted runs resume from their last checkpoint.", no_args_is_help=True
)

DataOption = Annotated[
    str | None,
    typer.Option("--data", help="synthetic | oxford | a folder in Oxford layout (data.source)."),
]
RunIdOption = Annotated[
    str | None, typer.Option("--run-id", help="Name the run (resumed if it exists).")
]
ResumeOption = Annotated[
    str,
    typer.Option(
        "--resume",
        help="auto: continue --run-id, or the newest unfinished run of this task; "
        "never: start fresh; RUN_ID: continue that run.",
    ),
]
MaxStepsOption = Annotated[int | None, typer.Option("--max-steps", help="optim.max_steps")]
CkptEveryOption = Annotated[int | None, typer.Option("--ckpt-every", help="checkpoint.every_steps")]
ProgressOption = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Progress bar (default: when on a terminal)."),
]


def _train(
    task: str,
    out: OutOption,
    config: ConfigOption,
    set_: SetOption,
    data: str | None,
    run_id: str | None,
    resume: str,
    max_steps: int | None,
    ckpt_every: int | None,
    progress: bool | None,
    json_: bool,
    extra: dict[str, object] | None = None,
) -> None:
    from tinycats.config import build_config
    from tinycats.storage import LocalStore
    from tinycats.train import PreemptionGuard, plan_run, run_training

    flags = {
        "data.source": data,
        "optim.max_steps": max_steps,
        "checkpoint.every_steps": ckpt_every,
        **(extra or {}),
    }
    build_config(task, config, set_, flags=flags)  # fail on a bad value before touching the store
    store = LocalStore(out)
    plan = plan_run(store, task, run_id, resume)
    cfg = build_config(task, config, set_, plan.saved_config, flags=flags)
    if not json_:
        console.print(f"[bold]{plan.run_id}[/]: {plan.reason} → {store.root}", highlight=False)
    with PreemptionGuard() as guard:
        result = run_training(cfg, store, plan.run_id, guard=guard, progress=progress)
    if json_:
        print_json(asdict(result))
        return
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
    console.print(
        f"[bold]{result.status}[/] {result.run_id} at step {result.step}/{result.max_steps}"
        f" in {result.elapsed_seconds:.1f}s  {metrics}\ncheckpoint: {result.checkpoint}",
        highlight=False,
    )
    if result.status == "preempted":
        console.print(f"resume with: tinycats train {task} --run-id {result.run_id}")


@app.command("classifier")
def classifier(
    out: OutOption = DEFAULT_OUT_PATH,
    config: ConfigOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    run_id: RunIdOption = None,
    resume: ResumeOption = "auto",
    max_steps: MaxStepsOption = None,
    ckpt_every: CkptEveryOption = None,
    progress: ProgressOption = None,
    json_: JsonOption = False,
) -> None:
    """Train the breed classifier (ResNet-18 by default)."""
    _train(
        "classifier",
        out,
        config,
        set_,
        data,
        run_id,
        resume,
        max_steps,
        ckpt_every,
        progress,
        json_,
    )


@app.command("dit")
def dit(
    out: OutOption = DEFAULT_OUT_PATH,
    config: ConfigOption = None,
    set_: SetOption = None,
    preset: Annotated[str | None, typer.Option("--preset", help="test | small | tiny")] = None,
    data: DataOption = None,
    run_id: RunIdOption = None,
    resume: ResumeOption = "auto",
    max_steps: MaxStepsOption = None,
    ckpt_every: CkptEveryOption = None,
    progress: ProgressOption = None,
    json_: JsonOption = False,
) -> None:
    """Train the class-conditional TinyDiT generator (flow matching).

    --preset also sets data.image_size to the preset's resolution, unless
    --set data.image_size=N is given.
    """
    extra: dict[str, object] = {}
    if preset is not None:
        from tinycats.errors import ConfigError
        from tinycats.models.dit import PRESETS

        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        extra["dit.preset"] = preset
        if not any(item.startswith("data.image_size=") for item in set_ or []):
            extra["data.image_size"] = PRESETS[preset]["image_size"]
    _train(
        "dit",
        out,
        config,
        set_,
        data,
        run_id,
        resume,
        max_steps,
        ckpt_every,
        progress,
        json_,
        extra,
    )
