"""Running the site's JavaScript modules in node, for the tests that compare them with
the Python they mirror."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SITE = Path(__file__).resolve().parents[2] / "src" / "tinycats" / "deploy" / "site"


def run_node(script: str) -> Any:
    """The JSON that `script` prints with console.log; skips the test where node is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the site's modules")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out)
