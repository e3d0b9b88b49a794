"""`tinycats train TASK`: a training run on the local Store, resumable."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

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
    err_console,
    print_json,
)
from tinycats.config import TASKS

if TYPE_CHECKING:
    from tinycats.config import TrainConfig
    from tinycats.storage import Store
    from tinycats.train import RunPlan, TrainResult
    from tinycats.train.distributed import Distributed

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
NprocOption = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="Data-parallel processes on this machine (DDP: one per GPU, gloo on CPUs); "
        "optim.batch_size is the global batch and must divide by it.",
    ),
]
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
    nproc: NprocOption = 1,
    json_: JsonOption = False,
) -> None:
    from tinycats.config import build_config
    from tinycats.errors import TinycatsError
    from tinycats.storage import LocalStore
    from tinycats.train import RunPlan, claim_run
    from tinycats.train.distributed import distributed_from_env

    flags = {
        "data.source": data,
        "optim.max_steps": max_steps,
        "checkpoint.every_steps": ckpt_every,
        **_preset_flags(task, preset, set_ or []),
    }
    build_config(task, config, set_, flags=flags)  # fail on a bad value before touching the store
    # Under torchrun every rank runs this command: rank 0 takes the run (its lock, held
    # until training ends) and plans it under the lock; the others follow the plan.
    with distributed_from_env() as dist, contextlib.ExitStack() as held:
        try:
            claimed = dist.on_main(
                lambda: held.enter_context(claim_run(LocalStore(out), task, run_id, resume))
            )
            summary = dist.broadcast_json(claimed[0].summary() if claimed else None)
            plan, store = claimed or (RunPlan.follow(summary), LocalStore(out))
            cfg = build_config(task, config, set_, plan.saved_config, flags=flags)
            if not json_ and dist.is_main:
                console.print(
                    f"[bold]{plan.run_id}[/]: {plan.reason} → {store.root}", highlight=False
                )
            result = _run(cfg, store, plan, progress, nproc, dist)
        except TinycatsError:
            if dist.is_main:
                raise
            raise typer.Exit(2) from None  # rank 0 says it, once
    if not dist.is_main:
        return
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


def _run(
    cfg: TrainConfig,
    store: Store,
    plan: RunPlan,
    progress: bool | None,
    nproc: int,
    dist: Distributed,
) -> TrainResult:
    """Train in this process (alone, or as one rank under torchrun) or launch `nproc` ranks
    (which load the planned checkpoint themselves)."""
    from tinycats.errors import ConfigError
    from tinycats.train import PreemptionGuard, run_training
    from tinycats.train.launch import RankFailed, RankJob, launch_training

    run_id = plan.run_id
    with PreemptionGuard() as guard:
        if nproc == 1:
            return run_training(
                cfg, store, run_id, resume=plan.resume, guard=guard, progress=progress, dist=dist
            )
        if dist.enabled:
            raise ConfigError(
                "--nproc launches the ranks itself; do not also run it under torchrun"
            )
        try:
            return launch_training(nproc, RankJob(cfg, store, run_id, progress), guard)
        except RankFailed as err:
            err_console.print(str(err), highlight=False)
            raise typer.Exit(1) from None


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
