"""Progress bars for the data layer's long work (downloads, packing), on stderr.

A disabled bar is still a working `Progress` object, so callers never branch on
whether the user wants to see it.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def make_progress(enabled: bool, *, transfer: bool = False) -> Progress:
    """A rich Progress on stderr; `transfer=True` shows bytes and speed instead of counts."""
    counters = (DownloadColumn(), TransferSpeedColumn()) if transfer else (MofNCompleteColumn(),)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counters,
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
