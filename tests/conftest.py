"""Test-wide settings.

One intra-op thread for torch, here and in every subprocess a test starts: the exact
-resume tests compare weights bit for bit, and on a loaded 2-core machine we saw two
uninterrupted 2-thread runs differ in the last bits. Tiny test models lose little
speed, and the suite no longer oversubscribes the cores.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import torch  # after the thread settings, which torch reads at import

torch.set_num_threads(1)
