"""Test-wide settings and the helpers several test files share.

One intra-op thread for torch, here and in every subprocess a test starts: the exact
-resume tests compare weights bit for bit, and on a loaded 2-core machine we saw two
uninterrupted 2-thread runs differ in the last bits. Tiny test models lose little
speed, and the suite no longer oversubscribes the cores.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # after the thread settings, which torch reads at import

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    """What a `tinycats` command printed and how it exited (as subprocess.run reports it)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """`tinycats ARGS` in this process, through typer's runner: no interpreter and torch
    start-up per call. A bug (any exception but a user error's exit) raises here with its
    traceback; `test_cli.py` checks the real process's exit code once."""
    from typer.testing import CliRunner

    from tinycats.cli import app

    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    """The in-process `tinycats` command (see `run_cli`); session-wide, so that module
    fixtures can train the runs their tests share."""
    return run_cli


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request) -> Iterator[Path]:
    """A folder for the runs a module's tests share, deleted when the module ends unless
    one of its tests failed: they hold real ResNet-18 checkpoints (~180 MB each), and a
    whole session's worth (~14 GB) filled CI's disk."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    """The shipped configs (configs/*.toml)."""
    return REPO / "configs"


@pytest.fixture(scope="session")
def oxford_mini() -> Path:
    """The real cat photos: $TINYCATS_OXFORD_MINI, else ../shared/data/oxford-cats-mini next
    to the repository. A test that asks for them is skipped, with the reason, without them."""
    env = os.environ.get("TINYCATS_OXFORD_MINI")
    folder = Path(env) if env else REPO.parent / "shared" / "data" / "oxford-cats-mini"
    if not (folder / "annotations" / "list.txt").is_file():
        pytest.skip(f"oxford-cats-mini not found at {folder} (set TINYCATS_OXFORD_MINI)")
    return folder


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path`, creating its folders; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def write() -> Callable[[Path, str], Path]:
    """`write(path, text)`: a file with its folders (see `write_text`)."""
    return write_text


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by playwright (the web demo's and the report's tests);
    skipped where either is missing."""
    from tinycats.deploy.web import CHROMIUM, CHROMIUM_FLAGS

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file() or shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS))
        yield browser
        browser.close()
