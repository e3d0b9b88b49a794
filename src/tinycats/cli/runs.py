"""`tinycats runs ls|show`: the run registry (`runs/<run_id>.json`) at a glance."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    RunIdArgument,
    console,
    print_json,
    print_pairs,
    print_table,
)

app = typer.Typer(help="List and inspect training runs.", no_args_is_help=True)


def best_metric_cell(record: dict[str, Any]) -> str:
    """'val_acc=0.9123' using the run's own best metric (from its saved config)."""
    name = (record.get("config") or {}).get("checkpoint", {}).get("best_metric")
    metrics = record.get("metrics") or {}
    if name in metrics:
        return f"{name}={metrics[name]:.4g}"
    return "-"


@app.command("ls")
def ls(out: OutOption = DEFAULT_OUT_PATH, json_: JsonOption = False) -> None:
    """List every run, newest first: id, task, status, step, best metric, start, attempts."""
    from tinycats.storage import LocalStore, RunRegistry

    records = RunRegistry(LocalStore(out)).list()
    if json_:
        print_json(records)
        return
    if not records:
        console.print(f"no runs in {out / 'runs'}; start one with `tinycats train classifier`")
        return
    print_table(
        ("run id", "task", "status", "step", "best metric", "started", "attempts"),
        [
            (
                r.get("run_id", "?"),
                r.get("task", "?"),
                r.get("status", "?"),
                r.get("step", "-"),
                best_metric_cell(r),
                r.get("started_at", "-"),
                r.get("attempts", "-"),
            )
            for r in records
        ],
        right=("step", "attempts"),
    )


@app.command("show")
def show(
    run: RunIdArgument,
    out: OutOption = DEFAULT_OUT_PATH,
    metrics: Annotated[
        bool, typer.Option("--metrics", help="The run's metrics log instead of its record.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Show one run's record: status, times, attempts, metrics, versions and resolved config."""
    from tinycats.storage import LocalStore, RunRegistry

    store = LocalStore(out)
    record = RunRegistry(store).get(run)
    if metrics:
        from tinycats.storage.metrics_log import run_metrics

        _show_metrics(run_metrics(store, run, record.get("task")), json_)
        return
    if json_:
        print_json(record)
        return
    print_pairs(
        (key, value if isinstance(value, str) else json.dumps(value, default=str))
        for key, value in record.items()
        if key != "config"
    )
    console.print("config:", json.dumps(record.get("config", {}), indent=2), highlight=False)


METRIC_COLUMNS = {
    "train": ("loss", "lr", "grad_norm", "img_per_s", "data_ms", "step_ms", "checkpoint_ms"),
}
"""The columns of the train lines' table, in order (eval lines show whatever they hold)."""


def _show_metrics(lines: list[dict[str, Any]], json_: bool) -> None:
    if json_:
        print_json(lines)
        return
    for kind in ("train", "eval"):
        rows = [line for line in lines if line.get("kind") == kind]
        if not rows:
            continue
        skip = {"step", "kind", "time", "steps"}
        names = METRIC_COLUMNS.get(kind) or sorted({k for r in rows for k in r} - skip)
        print_table(
            ("step", *names),
            [(row["step"], *(_cell(row.get(name)) for name in names)) for row in rows],
            title=f"{kind} ({len(rows)} lines)",
            right=("step", *names),
        )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
