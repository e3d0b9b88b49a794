"""Crash-safe storage: Store backends, atomic writes, checkpoints, retention, the run registry.

Modules (imports only go down this list's dependencies, never up to models or cloud):
  atomic            tmp + fsync + os.replace writes; a full disk becomes a StorageError
  store             Store protocol; LocalStore (a directory) and VolumeStore (a Modal volume)
  retention         the pure keep/delete policy
  manifest          meta.json, hash verification and safe decoding of one checkpoint
  layout            where a run's checkpoints live; step folder names; the latest pointer
  listing           listing a run's checkpoints, with index.json as a checked cache
  checkpoint_files  writing a checkpoint's files: fsynced and hashed in a pipeline
  trash             deletion by rename-then-remove; sweeping crash leftovers
  checkpoint        CheckpointManager: the save protocol, fallback loading, pruning
  resolve           a run id / run folder / step folder → a verified checkpoint
  runs              RunRegistry: one record per run plus a derived index

Names are loaded lazily (PEP 562) so that e.g. `tinycats.storage.runs` or the CLI's
`--help` does not pay for importing torch, which only checkpoints need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "fsync_dir": "atomic",
    "write_bytes_atomic": "atomic",
    "write_json_atomic": "atomic",
    "Store": "store",
    "LocalStore": "store",
    "VolumeStore": "store",
    "CheckpointRecord": "retention",
    "select_keep": "retention",
    "CheckpointInfo": "manifest",
    "LoadedCheckpoint": "manifest",
    "load_checkpoint": "manifest",
    "verify_checkpoint": "manifest",
    "find_run_dir": "layout",
    "list_checkpoints": "listing",
    "CheckpointManager": "checkpoint",
    "resolve_checkpoint": "resolve",
    "RunRegistry": "runs",
    "new_run_id": "runs",
}

__all__ = [
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointRecord",
    "LoadedCheckpoint",
    "LocalStore",
    "RunRegistry",
    "Store",
    "VolumeStore",
    "find_run_dir",
    "fsync_dir",
    "list_checkpoints",
    "load_checkpoint",
    "new_run_id",
    "resolve_checkpoint",
    "select_keep",
    "verify_checkpoint",
    "write_bytes_atomic",
    "write_json_atomic",
]

if TYPE_CHECKING:
    from tinycats.storage.atomic import fsync_dir, write_bytes_atomic, write_json_atomic
    from tinycats.storage.checkpoint import CheckpointManager
    from tinycats.storage.layout import find_run_dir
    from tinycats.storage.listing import list_checkpoints
    from tinycats.storage.manifest import (
        CheckpointInfo,
        LoadedCheckpoint,
        load_checkpoint,
        verify_checkpoint,
    )
    from tinycats.storage.resolve import resolve_checkpoint
    from tinycats.storage.retention import CheckpointRecord, select_keep
    from tinycats.storage.runs import RunRegistry, new_run_id
    from tinycats.storage.store import LocalStore, Store, VolumeStore


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tinycats.storage' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tinycats.storage.{module}"), name)
    globals()[name] = value
    return value
