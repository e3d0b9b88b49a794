"""The `tinycats` command line: parses, prints, and calls the layers below.

User errors (`TinycatsError`) are printed as one line on stderr with exit code 2;
anything else keeps its traceback because it is a bug.
"""

from __future__ import annotations

import sys

import typer

from tinycats.cli import ckpt, config_cmd, data, doctor, infer, runs, train
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
app.add_typer(infer.export_app, name="export")
app.add_typer(runs.app, name="runs")
app.add_typer(ckpt.app, name="ckpt")


def main() -> None:
    """Console-script entry point."""
    try:
        exit_code = app(standalone_mode=False)
        if isinstance(exit_code, int):
            sys.exit(exit_code)
    except TinycatsError as err:
        from tinycats.cli.common import err_console

        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        raise
