"""Listing a run's checkpoints quickly, with `index.json` as a cache that is never trusted.

The truth about a checkpoint is its own folder: `step_X/` counts once its manifest
(`meta.json`) was written and the folder renamed into place. Reading 10,000
manifests takes a third of a second (longer on network volumes), so the writer
also keeps `index.json`, one entry per step with the time and metrics its manifest
holds. Two rules keep that cache from ever misleading a reader:

- An entry counts only for the manifest it was read from: it records that file's
  inode and change time (ctime, which no copy or restore can set), checked with one
  `stat` per step, which also proves the manifest still exists. An entry for a
  manifest that was replaced, edited, restored from a backup or copied is ignored
  and the manifest read instead (`RunListing.stale` then tells the writer to
  rewrite the index).
- Decisions confirm what they act on: `disagreeing()` rereads the manifests of the
  checkpoints a decision picks (the best one, the ones prune deletes), and on any
  disagreement the caller lists again from the manifests alone.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinycats.errors import CheckpointError
from tinycats.storage.atomic import read_json, write_bytes_atomic
from tinycats.storage.layout import INDEX_FILE, parse_step
from tinycats.storage.manifest import FORMAT_VERSION, META_FILE, CheckpointInfo, read_meta


@dataclass
class RunListing:
    """The completed checkpoints of a run folder, and what the listing learnt on the way."""

    infos: list[CheckpointInfo]
    stamps: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Step → (inode, ctime in ns) of its manifest when listed (none for a missing one)."""
    stale: bool = False
    """Some folder had no valid index entry: the index should be rewritten."""

    def index_entries(self) -> dict[str, dict[str, Any]]:
        """The index that describes exactly this listing."""
        return {
            str(i.step): index_entry(i.time, i.metrics, self.stamps[i.step]) for i in self.infos
        }


def manifest_stamp(step_dir: Path) -> tuple[int, int]:
    """(inode, ctime in ns) of a step's manifest: changes whenever the file is replaced
    or written to, and cannot be carried over by a copy."""
    st = os.stat(Path(step_dir) / META_FILE)
    return st.st_ino, st.st_ctime_ns


def index_entry(time: float, metrics: dict[str, float], stamp: tuple[int, int]) -> dict[str, Any]:
    return {"time": time, "metrics": metrics, "stamp": list(stamp)}


def read_index(run_dir: Path) -> dict[str, Any]:
    """The cached entries by step (as a string); {} when the index is absent or unreadable."""
    try:
        entries = read_json(Path(run_dir) / INDEX_FILE)["checkpoints"]
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_index(run_dir: Path, entries: dict[str, Any]) -> None:
    """Replace the index atomically; compact JSON, which parses faster than indented."""
    doc = {"format_version": FORMAT_VERSION, "checkpoints": entries}
    # Not fsynced: a cache that a crash may lose (listing then reads the manifests).
    text = json.dumps(doc, separators=(",", ":"))
    write_bytes_atomic(Path(run_dir) / INDEX_FILE, text.encode(), durable=False)


def manifest_view(step_dir: Path) -> tuple[float, dict[str, float]] | None:
    """(time, metrics) as a step folder's own manifest says; None when the folder is gone.

    A missing or unreadable manifest gives the file's (or folder's) time and no
    metrics: such a folder is damaged, and is listed so that verify and load say why.
    """
    try:
        doc = read_meta(step_dir)
    except CheckpointError:
        meta_path = Path(step_dir) / META_FILE
        try:
            return os.stat(meta_path if meta_path.exists() else step_dir).st_mtime, {}
        except FileNotFoundError:
            return None
    metrics = doc.get("metrics") or {}
    return float(doc.get("time", 0.0)), {k: float(v) for k, v in metrics.items()}


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects that form no cycles.

    Listing allocates a few objects per checkpoint; in a process with torch loaded
    (~200k tracked objects) the collections those allocations trigger cost as much
    as the listing itself (measured: 10,000 checkpoints, 170 ms → 85 ms CPU).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def scan_run(run_dir: Path, *, use_index: bool = True) -> RunListing:
    """Completed checkpoints by parsed step (never by name or mtime), index entries checked."""
    run_dir = Path(run_dir)
    task, run_id = run_dir.parent.parent.name, run_dir.name
    listing = RunListing([])
    with gc_paused():
        try:
            # iterdir builds each child path without re-parsing it: 3x cheaper than joining.
            found = [(s, p) for p in run_dir.iterdir() if (s := parse_step(p.name)) is not None]
            dir_fd = os.open(run_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            return listing
        try:
            index = read_index(run_dir) if use_index else {}
            for step, path in sorted(found):
                # Runs once per checkpoint on every listing, hence the inline checks.
                try:
                    st = os.stat(f"{path.name}/{META_FILE}", dir_fd=dir_fd)
                except NotADirectoryError:
                    continue  # a file that happens to be named like a checkpoint
                except FileNotFoundError:
                    # Only a complete folder is ever renamed to `step_X`: a missing manifest
                    # is damage, listed so that verify and load report it.
                    mtime = os.stat(path.name, dir_fd=dir_fd).st_mtime
                    listing.infos.append(CheckpointInfo(path, run_id, task, step, mtime))
                    continue
                stamp = [st.st_ino, st.st_ctime_ns]
                cached = index.get(str(step))
                if (
                    type(cached) is dict
                    and cached.get("stamp") == stamp
                    and type(cached.get("time")) is float
                    and type(metrics := cached.get("metrics")) is dict
                    and all(type(v) is float for v in metrics.values())
                ):
                    time_ = cached["time"]
                else:
                    listing.stale = True
                    time_, metrics = manifest_view(path) or (st.st_mtime, {})
                listing.stamps[step] = (stamp[0], stamp[1])
                listing.infos.append(CheckpointInfo(path, run_id, task, step, time_, metrics))
        finally:
            os.close(dir_fd)
    return listing


def list_checkpoints(run_dir: Path, *, use_index: bool = True) -> list[CheckpointInfo]:
    """Completed checkpoints (`step_X/` folders renamed into place with their manifest), by step."""
    return scan_run(run_dir, use_index=use_index).infos


def disagreeing(infos: Iterable[CheckpointInfo]) -> list[CheckpointInfo]:
    """The listed checkpoints whose own manifest says something else (or is gone)."""
    return [i for i in infos if manifest_view(i.path) != (i.time, i.metrics)]
