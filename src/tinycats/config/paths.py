"""Where the local Store lives when the command line does not say."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_OUT = "tinycats-out"
"""Root of the local Store when neither --out nor TINYCATS_HOME is given."""

OUT_ENV_VAR = "TINYCATS_HOME"


def default_out_dir() -> Path:
    """The Store root: $TINYCATS_HOME if set, else ./tinycats-out."""
    return Path(os.environ.get(OUT_ENV_VAR) or DEFAULT_OUT)
