"""`tinycats cloud report`: a run's report from the outputs volume, without mounting it.

Everything the report reads is downloaded into a temporary Store (the run record, the
run folder's manifests, pointer, index and metrics log, the evaluation reports and the
preview grids), but not the weights, which the report never opens: a checkpoint's size
and hash come from its manifest.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tinycats.cloud.remote_volume import RemoteVolume
from tinycats.errors import StorageError, TinycatsError
from tinycats.storage.layout import CHECKPOINTS_DIR

SKIPPED_SUFFIXES = (".safetensors", ".pt")
"""Weights and train state: most of a run's bytes, and nothing the report shows."""


def cloud_report(remote: RemoteVolume, run_id: str, compare: list[str] | None, out: Path) -> Path:
    """Download `run_id` (and `compare`) from `remote` and write the report to `out`."""
    from tinycats.report import write_report
    from tinycats.storage import LocalStore

    with tempfile.TemporaryDirectory(prefix="tinycats-report-") as tmp:
        store = LocalStore(Path(tmp))
        for run in [run_id, *(compare or [])]:
            fetch_run(remote, run, store.root)
        return write_report(store, run_id, compare, out)


def fetch_run(remote: RemoteVolume, run_id: str, dest: Path) -> None:
    """Copy what a report of `run_id` reads from the volume to the Store root `dest`."""
    try:
        raw = remote.read_bytes(f"runs/{run_id}.json")
    except StorageError:
        raise TinycatsError(
            f"unknown run {run_id!r} on volume {remote.name}; see `tinycats cloud volume ls "
            "runs` (a run's record exists once its first call has started training)"
        ) from None
    (dest / "runs").mkdir(parents=True, exist_ok=True)
    (dest / "runs" / f"{run_id}.json").write_bytes(raw)
    run_dir = _run_dir(remote, json.loads(raw).get("task", "*"), run_id)
    if run_dir is not None:
        for entry in remote.ls(run_dir, recursive=True):
            if not entry.is_dir and not entry.path.endswith(SKIPPED_SUFFIXES):
                path = entry.path.strip("/")
                remote.get(path, dest / path)
    for folder in (f"reports/{run_id}", f"samples/{run_id}"):
        try:
            remote.get(folder, dest / folder)
        except StorageError:
            continue  # never evaluated, or a task without previews


def _run_dir(remote: RemoteVolume, task: str, run_id: str) -> str | None:
    """`checkpoints/<task>/<date>/<run_id>` on the volume, whatever its date."""
    try:
        dates = [e.path.strip("/") for e in remote.ls(f"{CHECKPOINTS_DIR}/{task}") if e.is_dir]
    except StorageError:
        return None  # no checkpoint of this task yet
    for date in sorted(dates, reverse=True):
        names = {e.path.strip("/").rsplit("/", 1)[-1] for e in remote.ls(date) if e.is_dir}
        if run_id in names:
            return f"{date}/{run_id}"
    return None
