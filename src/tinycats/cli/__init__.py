"""The `tinycats` command line: parses, prints, and calls the layers below.

User errors (`TinycatsError`) are printed as one line on stderr with exit code 2, by
the root group itself, so every way of invoking it (the console script, `python -m
tinycats`, typer's test runner) ends a user error the same way; anything else keeps
its traceback because it is a bug.
"""

from __future__ import annotations

import errno
import sys
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

PATH_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.ENOSPC,
        errno.EDQUOT,
    }
)
"""OS errors about a path the user chose (unwritable, read-only, a file where a folder
belongs, a full disk): user errors wherever they surface, named with their path."""


class RootGroup(TyperGroup):
    """The root command group: a `TinycatsError` from any command, an OS error about a
    path the user chose, and Click's usage errors (a bad option value) each become one
    stderr line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        from tinycats.cli.common import print_error

        try:
            return super().invoke(ctx)
        except TinycatsError as err:
            print_error(err)
        except OSError as err:
            if err.errno not in PATH_ERRNOS or err.filename is None:
                raise
            print_error(
                f"cannot write {err.filename} ({err.strerror}); pass --out (or -o) a path "
                "where tinycats may write"
            )
        raise typer.Exit(USER_ERROR_EXIT) from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """As Click's, but a usage error is the same one line as any user error, not
        Click's usage box."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        from tinycats.cli.common import print_error

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as err:  # Click's (vendored by typer) usage errors
            ctx = getattr(err, "ctx", None)
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            print_error(f"{err.format_message()}{where}")
            sys.exit(err.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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
