"""`tinycats report`: one self-contained HTML page of what a run did.

gather   the run's facts from a Store (record, metrics log, checkpoints, evaluations,
         preview grids, config against the defaults)
plots    the figures, drawn with matplotlib
html     the page: every image embedded as a data URI, no script, no network
"""

from __future__ import annotations

from pathlib import Path

from tinycats.errors import StorageError
from tinycats.storage import Store

REPORT_FILE = "report.html"


def default_report_path(store: Store, run_id: str) -> Path:
    return store.root / "reports" / run_id / REPORT_FILE


def write_report(
    store: Store, run_id: str, compare: list[str] | None = None, out: Path | None = None
) -> Path:
    """Write the report of `run_id` (curves overlaid with `compare`'s) to `out`, atomically."""
    from tinycats.report.gather import gather
    from tinycats.report.html import render
    from tinycats.storage import write_bytes_atomic

    facts = gather(store, run_id)
    others = [gather(store, other) for other in compare or []]
    page = render(facts, others).encode()
    path = Path(out) if out is not None else default_report_path(store, run_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, page)
    except OSError as err:
        raise StorageError(
            f"cannot write the report to {path} ({err.strerror or err}); pass -o with a "
            "writable path"
        ) from None
    return path
