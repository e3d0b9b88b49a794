"""The `tinycats` command line: parses, prints, and calls the layers below.

User errors (`TinycatsError`) are printed as one line on stderr with exit code 2, by
the root group itself, so every way of invoking it (the console script, `python -m
tinycats`, typer's test runner) ends a user error the same way; anything else keeps
its traceback because it is a bug.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from tinycats.cli import (
    bench,
    ckpt,
    cloud,
    config_cmd,
    data,
    doctor,
    export,
    infer,
    quickstart,
    report,
    runs,
    serve,
    train,
)
from tinycats.errors import TinycatsError

USER_ERROR_EXIT = 2
"""Exit code of a user error: the same as Click's own usage errors."""


class RootGroup(TyperGroup):
    """The root command group: a `TinycatsError` from any command becomes one stderr line
    and exit code 2 (Click handles its own usage errors the same way)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TinycatsError as err:
            from tinycats.cli.common import print_error

            print_error(err)
            raise typer.Exit(USER_ERROR_EXIT) from None


app = typer.Typer(
    name="tinycats",
    cls=RootGroup,
    help="Train small image models of cats locally or on Modal, and never lose training work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("quickstart")(quickstart.quickstart_command)
app.command("doctor")(doctor.doctor)
app.add_typer(config_cmd.app, name="config")
app.add_typer(data.app, name="data")
app.command("train")(train.train_command)
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
    """Console-script entry point."""
    app()
