"""`tinycats report RUN`: a run's self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tinycats.cli.cloud import VolumeOption
from tinycats.cli.common import DEFAULT_OUT_PATH, OutOption, RunIdArgument, console

CompareOption = Annotated[
    list[str] | None,
    typer.Option("--compare", help="Overlay this run's curves too (repeatable)."),
]
OutputOption = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="The HTML file (default: <out>/reports/RUN/report.html)."),
]


def report_command(
    run: RunIdArgument,
    compare: CompareOption = None,
    output: OutputOption = None,
    out: OutOption = DEFAULT_OUT_PATH,
) -> None:
    """One self-contained HTML page: status and attempts, curves, evaluation, preview grids,
    checkpoints, where the time went, config and versions."""
    from tinycats.report import write_report
    from tinycats.storage import LocalStore

    path = write_report(LocalStore(out), run, compare, output)
    console.print(f"report: {path}", highlight=False)


def cloud_report_command(
    run: str = typer.Argument(..., help="Run id on the outputs volume."),
    compare: CompareOption = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="The HTML file (default: RUN.html).")
    ] = None,
    volume: VolumeOption = None,
) -> None:
    """The same report for a run on the outputs volume (its weights are not downloaded)."""
    from tinycats.cloud.remote_volume import open_remote_volume
    from tinycats.cloud.report import cloud_report
    from tinycats.config import ModalConfig

    remote = open_remote_volume(volume or ModalConfig().outputs_volume)
    path = cloud_report(remote, run, compare, output or Path(f"{run}.html"))
    console.print(f"report: {path}", highlight=False)
