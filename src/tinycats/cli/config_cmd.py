"""`tinycats config show`: the resolved config for a task, as TOML or JSON."""

from __future__ import annotations

import typer

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    ConfigOption,
    JsonOption,
    OutOption,
    SetOption,
    TaskArgument,
    console,
    print_json,
)

app = typer.Typer(
    help="Inspect configs: defaults, files and --set overrides, resolved.", no_args_is_help=True
)


@app.command("show")
def show(
    task: TaskArgument = "classifier",
    config: ConfigOption = None,
    set_: SetOption = None,
    out: OutOption = DEFAULT_OUT_PATH,
    json_: JsonOption = False,
) -> None:
    """Print the resolved config (defaults → task defaults → file → --set)."""
    from tinycats.config import build_config
    from tinycats.data import resolve_data_root

    cfg = build_config(task, config, set_ or [])
    if json_:
        print_json(cfg.to_dict())
        return
    console.print(f"# store: {out}   data: {resolve_data_root(cfg.data, out)}", highlight=False)
    console.print(cfg.to_toml(), highlight=False, markup=False)
