"""The `tinycats` command line: parses, prints, and calls the layers below.

User errors (`TinycatsError`) are printed as one line on stderr with exit code 2;
anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import sys

import typer

from tinycats.cli import (
    bench,
    ckpt,
    cloud,
    config_cmd,
    data,
    doctor,
    export,
    infer,
    report,
    runs,
    serve,
    train,
)
from tinycats.errors import TinycatsError

app = typer.Typer(
    name="tinycats",
    help="Train small image models of cats locally or on Modal, and never lose training work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("doctor")(doctor.doctor)
app.add_typer(config_cmd.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.command("eval")(infer.eval_command)
app.command("predict")(infer.predict_command)
app.command("sample")(infer.sample_command)
app.add_typer(export.app, name="export")
app.command("serve")(serve.serve_command)
cloud.app.command("serve")(serve.cloud_serve_command)
cloud.app.command("report")(report.cloud_report_command)
app.add_typer(bench.app, name="bench")
app.command("report")(report.report_command)
app.add_typer(runs.app, name="runs")
app.add_typer(ckpt.app, name="ckpt")
app.add_typer(cloud.app, name="cloud")


def main() -> None:
    """Console-script entry point.

    Click handles usage errors itself (exit 2 with a usage line); a `TinycatsError`
    from any command leaves it untouched and is printed here as one line.
    """
    try:
        app()
    except TinycatsError as err:
        from tinycats.cli.common import err_console

        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
