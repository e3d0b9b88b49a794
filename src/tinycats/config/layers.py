"""Config layers: files (with `extends`), `--set key=value` and named CLI flags, as raw dicts.

This is the one place that turns what a user typed into config values. The local CLI
builds its `TrainConfig` from `user_layer(...)`, and the cloud client sends the very
same layer to the container, where a resumed run applies it on top of its saved
config: both sides layer files and flags alike because they share these functions.
A layer is unvalidated; loading.py validates the merged result.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tinycats.config.schema import TrainConfig
from tinycats.errors import ConfigError

NAMED_SOURCES = ("synthetic", "oxford")
"""`data.source` values that name a dataset rather than a folder."""


def merge_layers(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively: nested config sections merge key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_layers(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested layer as {dotted key: value}, the keys `--set` takes (reports, trackers)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def user_layer(
    file: Path | None = None,
    overrides: Sequence[str] | None = (),
    flags: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """What the user chose: the file (over the files it extends), then `--set` items, then
    named flags (dotted key → value; None means the flag was not given)."""
    raw = read_config_file(file) if file is not None else {}
    return apply_overrides(raw, overrides, flags)


def apply_overrides(
    raw: Mapping[str, Any],
    overrides: Sequence[str] | None = (),
    flags: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """`raw` with `--set key=value` items and then named flags applied (unvalidated)."""
    result = copy.deepcopy(dict(raw))
    items = [_parse_override(item) for item in overrides or ()]
    items += [(key.split("."), _plain(v)) for key, v in (flags or {}).items() if v is not None]
    for path, value in items:
        _check_key_exists(path)
        node = result
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return result


def _plain(value: object) -> object:
    """A flag's value as a config value: paths are strings in a config."""
    return str(value) if isinstance(value, Path) else value


def _parse_override(item: str) -> tuple[list[str], Any]:
    """'optim.lr=3e-4' → (['optim', 'lr'], 0.0003); values are TOML, else plain strings."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set optim.lr=3e-4)")
    if "\n" in item or "\r" in item:  # TOML would read the first line and drop the rest
        raise ConfigError(f"--set {item!r} holds a newline; pass one key=value per --set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def _check_key_exists(path: list[str]) -> None:
    """Name unknown keys with the valid ones, before pydantic's generic message."""
    model: type[BaseModel] = TrainConfig
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(path[:depth]) or "top level"
            raise ConfigError(
                f"unknown config key {'.'.join(path)!r}; valid keys at {where}: {', '.join(fields)}"
            )
        annotation = fields[part].annotation
        if depth < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                raise ConfigError(f"config key {'.'.join(path[: depth + 1])!r} has no sub-keys")
            model = annotation


def read_config_file(path: Path) -> dict[str, Any]:
    """A config file as a raw dict, with the file it `extends` merged in beneath it.

    `extends = "other.toml"` (relative to the file) lets a variant recipe state only
    what it changes, so a fix to the base recipe reaches every variant. Bases may
    extend further bases; a cycle or a base for another task is an error. A folder
    in `data.source` is relative to the file that names it too, so a shipped config
    works from any directory.
    """
    return _read_with_bases(Path(path), ())


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; check the --config path") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; pass a .toml file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    here = path.resolve()
    if here in chain:
        cycle = " -> ".join(p.name for p in (*chain, here))
        raise ConfigError(f"config file {path} extends itself ({cycle}); remove the cycle")
    raw = _resolve_data_source(_read_toml(path), path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"'extends' in {path} must be a file name, got {base_name!r}")
    base_path = path.parent / base_name
    if not base_path.is_file():
        raise ConfigError(
            f"config file {path} extends {base_name!r}, but {base_path} does not exist; "
            "fix the 'extends' path (it is relative to the file)"
        )
    base = _read_with_bases(base_path, (*chain, here))
    if "task" in raw and "task" in base and raw["task"] != base["task"]:
        raise ConfigError(
            f"config file {path} is for task {raw['task']!r} but extends {base_name!r}, "
            f"which is for task {base['task']!r}; extend a config of the same task"
        )
    return merge_layers(base, raw)


def _resolve_data_source(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """A relative folder in `data.source` made absolute against the file's own folder."""
    data = raw.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str) or not source or source in NAMED_SOURCES:
        return raw
    folder = Path(source).expanduser()
    if not folder.is_absolute():
        data["source"] = str((path.parent / folder).resolve())
    return raw
