"""An exported model folder (the Hugging Face layout): what it holds and how to load one.

    model.safetensors   the weights inference uses (the EMA weights when the run kept them)
    config.json         format, task, model_args, classes, preprocessing or generation
                        settings, the run it came from and its full resolved config
    README.md           the model card (written by tinycats.deploy.hf)

The folder is self-describing, so `tinycats predict DIR` and `tinycats sample DIR` load it
like a checkpoint: the model is rebuilt from its own `model_args` and config, never from
today's defaults. The writer lives in `tinycats.deploy.hf`; the names are defined here,
where the reader is, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinycats.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
FORMAT = "tinycats-export"
FORMAT_VERSION = 1


def is_export_dir(path: Path) -> bool:
    """Whether `path` is a folder written by `tinycats export hf` (by its config.json)."""
    config = Path(path) / CONFIG_FILE
    try:
        return config.is_file() and json.loads(config.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_export_config(folder: Path) -> dict[str, Any]:
    """config.json of an exported folder, checked for the keys a loader needs."""
    path = Path(folder) / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read {path} ({err}); re-export the model with `tinycats export hf`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a tinycats export; export one with `tinycats export hf`"
        )
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has export format version {doc.get('format_version')!r}, this tinycats "
            f"reads {FORMAT_VERSION}; use the tinycats version that wrote it"
        )
    missing = [
        k for k in ("task", "model_args", "classes", "training_config", "source") if k not in doc
    ]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; re-export the model")
    return doc


def load_export_weights(folder: Path) -> dict[str, Any]:
    """The state dict of an exported folder (safetensors: no code is ever unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; re-export the model with `tinycats export hf`")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); re-export it"
        ) from None
