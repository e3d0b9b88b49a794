"""`tinycats train TASK`: a training run on the local Store, resumable."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    TASK_CHOICES,
    ConfigOption,
    DataOption,
    JsonOption,
    MaxStepsOption,
    OutOption,
    SetOption,
    TaskArgument,
    console,
    print_json,
)
from tinycats.config import TASKS

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
CkptEveryOption = Annotated[int | None, typer.Option("--ckpt-every", help="checkpoint.every_steps")]
ProgressOption = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Progress bar (default: when on a terminal)."),
]
PresetOption = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="dit only: test | small | tiny; also sets data.image_size to the preset's "
        "resolution unless --set data.image_size=N is given.",
    ),
]


def train_command(
    task: TaskArgument,
    out: OutOption = DEFAULT_OUT_PATH,
    config: ConfigOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    run_id: RunIdOption = None,
    resume: ResumeOption = "auto",
    max_steps: MaxStepsOption = None,
    ckpt_every: CkptEveryOption = None,
    preset: PresetOption = None,
    progress: ProgressOption = None,
    json_: JsonOption = False,
) -> None:
    from tinycats.config import build_config
    from tinycats.storage import LocalStore
    from tinycats.train import PreemptionGuard, claim_run, run_training

    flags = {
        "data.source": data,
        "optim.max_steps": max_steps,
        "checkpoint.every_steps": ckpt_every,
        **_preset_flags(task, preset, set_ or []),
    }
    build_config(task, config, set_, flags=flags)  # fail on a bad value before touching the store
    # The run's lock is held until training ends: a second `train` of it is refused.
    with claim_run(LocalStore(out), task, run_id, resume) as (plan, store):
        cfg = build_config(task, config, set_, plan.saved_config, flags=flags)
        if not json_:
            console.print(f"[bold]{plan.run_id}[/]: {plan.reason} → {store.root}", highlight=False)
        with PreemptionGuard() as guard:
            result = run_training(
                cfg, store, plan.run_id, resume=plan.resume, guard=guard, progress=progress
            )
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


train_command.__doc__ = (
    f"Train a model ({TASK_CHOICES}); an interrupted run resumes from its last checkpoint.\n\n"
    + "\n\n".join(f"{name}: {spec.summary}." for name, spec in TASKS.items())
)


def _preset_flags(task: str, preset: str | None, set_: list[str]) -> dict[str, object]:
    """--preset as config values: the DiT preset and, unless set, its design resolution."""
    if preset is None:
        return {}
    from tinycats.errors import ConfigError
    from tinycats.models.dit import PRESETS

    if task != "dit":
        raise ConfigError(f"--preset applies to the dit task, not {task!r}; remove it")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    flags: dict[str, object] = {"dit.preset": preset}
    if not any(item.startswith("data.image_size=") for item in set_):
        flags["data.image_size"] = PRESETS[preset]["image_size"]
    return flags
