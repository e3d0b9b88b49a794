"""Build a validated `TrainConfig` from its layers, with one-line errors.

The layers, each on top of the last: the schema's defaults, the task's defaults
(tasks.py), a saved config (a resumed run's own), then the user's layer (a file,
`--set` items and named flags; layers.py). The resolved config is saved with every
run, and a resumed run is rebuilt from that saved copy, so a changed default never
silently changes a run already under way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tinycats.config.layers import merge_layers, user_layer
from tinycats.config.schema import TrainConfig
from tinycats.config.tasks import task_spec
from tinycats.errors import ConfigError


def build_config(
    task: str = "classifier",
    file: Path | None = None,
    overrides: Sequence[str] | None = (),
    base: Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, object] | None = None,
) -> TrainConfig:
    """Defaults → task defaults → `base` (a saved config) → file (over the files it
    extends) → `--set` overrides → named flags, validated.

    Raises ConfigError with a one-line message on any invalid key or value.
    """
    layer = user_layer(file, overrides, flags)
    return resolve_config(task, layer, base, origin=f"config file {file}" if file else "config")


def layered_config(
    task: str,
    file: Path | None = None,
    overrides: Sequence[str] | None = (),
    flags: Mapping[str, object] | None = None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """(the resolved config, the user's layer). The cloud client validates the config here,
    before any container starts, and sends the layer, which a resumed run re-applies in
    the container on top of its saved config (`resolve_config(task, layer, saved)`)."""
    layer = user_layer(file, overrides, flags)
    origin = f"config file {file}" if file else "config"
    return resolve_config(task, layer, origin=origin), layer


def resolve_config(
    task: str,
    layer: Mapping[str, Any],
    base: Mapping[str, Any] | None = None,
    *,
    origin: str = "config",
) -> TrainConfig:
    """The user's `layer` (see layers.user_layer) over `base` over the task's defaults."""
    layer_task = layer.get("task", task)
    if layer_task != task:
        raise ConfigError(f"{origin} is for task {layer_task!r}, not {task!r}")
    raw = merge_layers(task_spec(task).defaults, {"task": task})
    raw = merge_layers(raw, base or {})
    return validate_config(merge_layers(raw, layer))


def validate_config(raw: Mapping[str, Any]) -> TrainConfig:
    """Validate a raw dict (e.g. a config saved with a checkpoint) into a TrainConfig."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def format_validation_error(err: ValidationError) -> str:
    """The first problem of a failed validation, as one line naming the key and the value."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown config key {key!r}; see `tinycats config show` for valid keys"
    message = first["msg"].removeprefix("Value error, ")
    if isinstance(first.get("input"), dict):  # a check across a section's keys
        return f"invalid config section {key!r}: {message}" if key else f"invalid config: {message}"
    return f"invalid config value {key}={first.get('input')!r}: {message}"
