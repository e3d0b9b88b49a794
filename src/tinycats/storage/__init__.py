"""Crash-safe storage: Store backends, atomic writes, checkpoints, retention, the run registry.

Modules (imports only go down this list's dependencies, never up to models or cloud):
  atomic      tmp + fsync + os.replace writes; a full disk becomes a StorageError
  store       Store protocol; LocalStore (a directory) and VolumeStore (a Modal volume)
  retention   the pure keep/delete policy
  manifest    meta.json, hash verification and safe decoding of one checkpoint
  checkpoint  CheckpointManager: the save protocol, listing, fallback loading, pruning
  runs        RunRegistry: one record per run plus a derived index

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
    "CheckpointManager": "checkpoint",
    "find_run_dir": "checkpoint",
    "list_checkpoints": "checkpoint",
    "resolve_checkpoint": "checkpoint",
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
    from tinycats.storage.checkpoint import (
        CheckpointManager,
        find_run_dir,
        list_checkpoints,
        resolve_checkpoint,
    )
    from tinycats.storage.manifest import (
        CheckpointInfo,
        LoadedCheckpoint,
        load_checkpoint,
        verify_checkpoint,
    )
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
