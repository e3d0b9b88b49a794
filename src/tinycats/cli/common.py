"""Options, arguments and output helpers shared by every CLI command.

An option that two commands take is defined once here, so its flag, help and
default cannot drift apart between the local and the cloud command. Only the
standard library, typer and rich are imported at module level: `--help` must stay
fast, so torch and the layers below load inside the commands.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from tinycats.config import DEFAULT_OUT, OUT_ENV_VAR, TASKS

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# -- the Store, configs and output format ------------------------------------------------------

OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        envvar=OUT_ENV_VAR,
        help=f"Store root (checkpoints, runs, data). Env: {OUT_ENV_VAR}.",
        show_default=True,
    ),
]
DEFAULT_OUT_PATH = Path(DEFAULT_OUT)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (see configs/).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set optim.lr=3e-4 (repeatable)."),
]

# -- what to train, on what ---------------------------------------------------------------------

TASK_CHOICES = " | ".join(TASKS)
"""The tasks of the registry, as help text: a new task appears in every command."""

TaskArgument = Annotated[str, typer.Argument(metavar="TASK", help=TASK_CHOICES)]
TaskOption = Annotated[
    str, typer.Option("--task", help=f"{TASK_CHOICES} (their config defaults differ).")
]
DataOption = Annotated[
    str | None,
    typer.Option("--data", help="synthetic | oxford | a folder in Oxford layout (data.source)."),
]
MaxStepsOption = Annotated[int | None, typer.Option("--max-steps", help="optim.max_steps")]
RunIdArgument = Annotated[str, typer.Argument(help="The run id (see `tinycats runs ls`).")]

# -- a trained model, and what to ask of it ------------------------------------------------------

RefArgument = Annotated[
    str,
    typer.Argument(
        help="A run id, a run/step directory (best verified checkpoint is used), or a "
        "folder written by `tinycats export hf`."
    ),
]
SplitOption = Annotated[str, typer.Option("--split", help="train | val | test")]


def checked_output_file(path: Path | None) -> Path | None:
    """An output file option's value, refused at once when it cannot be a file: a folder,
    or a path under a file."""
    if path is None:
        return None
    try:
        if path.is_dir():
            raise typer.BadParameter(f"{path} is a folder; name a file in it")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as err:  # e.g. a name too long
        raise typer.BadParameter(f"{path}: {err.strerror}") from None
    if existing != path and not existing.is_dir():
        raise typer.BadParameter(f"{existing} is a file, so {path} cannot be written")
    return path


SampleOutputOption = Annotated[
    Path,
    typer.Option("-o", "--output", help="PNG file to write.", callback=checked_output_file),
]
BreedOption = Annotated[str, typer.Option("--breed", help="A class name, or 'all'.")]
PerClassOption = Annotated[int, typer.Option("--n", min=1, max=64, help="Samples per class.")]


def finite(value: float | None) -> float | None:
    """A float option's value, refused when it is nan or infinite (which would draw a
    black grid rather than fail)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


GuidanceOption = Annotated[
    float | None, typer.Option("--cfg", help="Guidance scale.", callback=finite)
]
StepsOption = Annotated[int | None, typer.Option("--steps", min=1, help="ODE steps.")]
SeedOption = Annotated[int, typer.Option("--seed")]

# -- output ----------------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """Write JSON to stdout (no rich markup, so it pipes cleanly into jq)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _cell(value: object) -> Text:
    """A table cell as plain text: a run id or a path is never read as rich markup."""
    return value if isinstance(value, Text) else Text(str(value))


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    right: Collection[str] = (),
    no_wrap: Collection[str] = (),
) -> None:
    """Rows under a header. Columns named in `right` (numbers) are right-aligned and, like
    the first column (an id) and those in `no_wrap`, never wrap."""
    from rich.table import Column, Table

    table = Table(
        *(
            Column(
                name,
                justify="right" if name in right else "left",
                no_wrap=index == 0 or name in right or name in no_wrap,
            )
            for index, name in enumerate(columns)
        ),
        title=title,
        title_justify="left",
    )
    for row in rows:
        table.add_row(*map(_cell, row))
    console.print(table)


def print_pairs(pairs: Iterable[tuple[str, object]]) -> None:
    """Name/value lines, aligned, without a frame (doctor, one run's record)."""
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for name, value in pairs:
        table.add_row(name, _cell(value))
    console.print(table)


def print_error(err: BaseException | str) -> None:
    """A user error as the one stderr line every command ends with (a message that
    spans lines, e.g. one quoting a parser, is joined into one)."""
    line = " ".join(str(err).split())
    err_console.print(Text.assemble(("error:", "bold red"), f" {line}"), highlight=False)
