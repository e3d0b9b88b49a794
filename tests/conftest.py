"""Test-wide settings.

One intra-op thread for torch, here and in every subprocess a test starts: the exact
-resume tests compare weights bit for bit, and on a loaded 2-core machine we saw two
uninterrupted 2-thread runs differ in the last bits. Tiny test models lose little
speed, and the suite no longer oversubscribes the cores.
"""

from __future__ import annotations

import os
import shutil

import pytest

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # after the thread settings, which torch reads at import

torch.set_num_threads(1)


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
