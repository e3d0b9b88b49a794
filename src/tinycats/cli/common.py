"""Options and output helpers shared by every CLI command.

Only the standard library, typer and rich are imported at module level: `--help`
must stay fast, so torch and the layers below load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tinycats.config import DEFAULT_OUT, OUT_ENV_VAR

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

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


def print_json(data: Any) -> None:
    """Write JSON to stdout (no rich markup, so it pipes cleanly into jq)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
