"""`tinycats ckpt ls|verify|prune`: inspect, check and thin out checkpoints.

RUN may be a run id, a run folder, or (for verify) a step folder; without it the
command covers every run under --out. Pruning uses each run's saved retention
config (task defaults for a run without a record), with --keep-last/--keep-best/
--every on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinycats.cli.cloud import VolumeOption, ckpt_ls_remote, volume_get, volume_put, volume_rm
from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    console,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from tinycats.storage import CheckpointInfo, CheckpointManager

app = typer.Typer(help="List, verify and prune checkpoints.", no_args_is_help=True)

RunArgument = Annotated[
    str | None, typer.Argument(help="Run id or run folder; all runs when omitted.")
]


def _run_dirs(out: Path, ref: str | None) -> list[Path]:
    """The run folders REF names (all of them under --out when REF is None)."""
    from tinycats.errors import CheckpointError
    from tinycats.storage import LocalStore, find_run_dir
    from tinycats.storage.layout import all_run_dirs, checked_run_dir, is_dir

    if ref is None:
        return all_run_dirs(LocalStore(out))
    if is_dir(ref):
        return [checked_run_dir(ref)]
    found = find_run_dir(LocalStore(out), ref)
    if found is None:
        raise CheckpointError(
            f"no checkpoints of run {ref!r} under {out / 'checkpoints'}; "
            "see `tinycats ckpt ls` or pass --out"
        )
    return [found]


def _manager(run_dir: Path, flags: Mapping[str, object] | None = None) -> CheckpointManager:
    """A manager for an existing run folder, with the run's saved policy plus `flags`."""
    from tinycats.config import build_config
    from tinycats.errors import TinycatsError
    from tinycats.storage import CheckpointManager, LocalStore, RunRegistry
    from tinycats.storage.layout import run_dir_parts

    root, task, run_id = run_dir_parts(run_dir)
    store = LocalStore(root)
    try:
        saved = RunRegistry(store).get(run_id).get("config") or None
    except TinycatsError:
        saved = None  # e.g. a run folder copied without its record
    config = build_config(task, base=saved, flags=flags)
    return CheckpointManager.from_config(store, task, run_id, config)


def _size(info: CheckpointInfo) -> int:
    return sum(p.stat().st_size for p in info.path.iterdir() if p.is_file())


def _row(manager: CheckpointManager, info: CheckpointInfo, marks: list[str]) -> dict[str, Any]:
    return {
        "run_id": manager.run_id,
        "task": manager.task,
        "step": info.step,
        "time": datetime.fromtimestamp(info.time).strftime("%Y-%m-%d %H:%M:%S"),
        "metrics": info.metrics,
        "marks": marks,
        "size_bytes": _size(info),
        "path": str(info.path),
    }


@app.command("ls")
def ls(
    run: RunArgument = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
    volume: VolumeOption = None,
) -> None:
    """List checkpoints: run, step, time, metrics, latest/best marks, size (or on a --volume)."""
    if volume:
        return ckpt_ls_remote(volume, run, json_)
    rows = []
    for run_dir in _run_dirs(out, run):
        manager = _manager(run_dir)
        latest, best = manager.latest(), manager.best()
        for info in manager.list():
            marks = [
                name
                for name, chosen in (("latest", latest), ("best", best))
                if chosen and chosen.step == info.step
            ]
            rows.append(_row(manager, info, marks))
    if json_:
        print_json(rows)
        return
    if not rows:
        console.print(f"no checkpoints under {out / 'checkpoints'}")
        return
    print_table(
        ("run", "step", "time", "metrics", "kept as", "size"),
        [
            (
                r["run_id"],
                r["step"],
                r["time"],
                "\n".join(f"{k}={v:.4g}" for k, v in sorted(r["metrics"].items())) or "-",
                ", ".join(r["marks"]),
                f"{r['size_bytes'] / 1e6:.2f} MB",
            )
            for r in rows
        ],
        right=("step", "size"),
        no_wrap=("time",),
    )


@app.command("verify")
def verify(
    target: Annotated[
        str | None, typer.Argument(help="Run id, run folder or step folder; all when omitted.")
    ] = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Check every checkpoint's files against its manifest and decode it safely; exit 2 if any is bad."""
    from tinycats.errors import CheckpointError
    from tinycats.storage import list_checkpoints, verify_checkpoint
    from tinycats.storage.layout import parse_step

    if target is not None and parse_step(Path(target).name) is not None and Path(target).is_dir():
        step_dirs = [Path(target)]
    else:
        step_dirs = [i.path for d in _run_dirs(out, target) for i in list_checkpoints(d)]
    items: Iterable[Path] = step_dirs
    if console.is_terminal and not json_ and len(step_dirs) > 1:  # hashing GBs takes a while
        from rich.progress import track

        items = track(step_dirs, description="verifying", console=console, transient=True)
    results = [{"path": str(p), "problems": verify_checkpoint(p)} for p in items]
    bad = [r for r in results if r["problems"]]
    if json_:
        print_json(results)
    else:
        for r in results:
            status = "[red]BAD[/]" if r["problems"] else "[green]ok[/] "
            console.print(f"{status} {r['path']}", highlight=False)
            for problem in r["problems"]:
                console.print(f"     {problem}", highlight=False, markup=False)
    if bad:
        raise CheckpointError(
            f"{len(bad)} of {len(results)} checkpoints failed verification "
            f"(first: {bad[0]['problems'][0]}); resume falls back to the newest good one"
        )
    if not results and not json_:
        console.print(f"no checkpoints under {out / 'checkpoints'}")


@app.command("prune")
def prune(
    run: RunArgument = None,
    keep_last: Annotated[int | None, typer.Option("--keep-last", help="Keep the newest N.")] = None,
    keep_best: Annotated[
        int | None, typer.Option("--keep-best", help="Keep the best K by the run's metric.")
    ] = None,
    every: Annotated[int | None, typer.Option("--every", help="Keep every K-th step.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, delete nothing.")] = False,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Delete checkpoints the retention policy does not keep (never latest, best or in-progress)."""
    flags = {
        "retention.keep_last": keep_last,
        "retention.keep_best": keep_best,
        "retention.keep_every": every,
    }
    from tinycats.storage.run_lock import LocalRunLock, held

    report = []
    for run_dir in _run_dirs(out, run):
        manager = _manager(run_dir, flags)
        if dry_run:
            kept, doomed = manager.plan_prune()
            gone, stays = [i.step for i in doomed], [i.step for i in kept]
        else:  # a writer of the run: refused while a live process trains it
            with held(LocalRunLock(manager.store, manager.run_id)):
                gone = [_step(p) for p in manager.prune()]
            stays = [i.step for i in manager.list()]
        report.append(
            {"run_id": manager.run_id, "kept": stays, "deleted": gone, "dry_run": dry_run}
        )
    if json_:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    for r in report:
        console.print(
            f"{r['run_id']}: keeping steps {_steps(r['kept'])}; {verb} {_steps(r['deleted'])}",
            highlight=False,
            markup=False,
        )
    if not report:
        console.print(f"no checkpoints under {out / 'checkpoints'}")


def _step(path: Path) -> int:
    from tinycats.storage.layout import parse_step

    step = parse_step(path.name)
    assert step is not None, path
    return step


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if steps else "none"


# Remote volumes (Modal): get/put/rm work on `--volume NAME` without mounting it.
app.command("get")(volume_get)
app.command("put")(volume_put)
app.command("rm")(volume_rm)
