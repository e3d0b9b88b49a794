"""A checkpoint folder's manifest (`meta.json`) and how its files are checked and decoded.

`meta.json` is written last inside the folder and lists the sha256 and size of
every other file, so a checkpoint proves its own integrity: a torn write, a flipped
byte or a missing file is found before anything is deserialised. Decoding is safe
by construction: weights are safetensors (no code), and `train_state.pt` is read
with `torch.load(weights_only=True)`, which refuses any pickled callable instead
of running it.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from tinycats.errors import CheckpointError

FORMAT_VERSION = 1
"""Bump when the folder layout or meta.json schema changes incompatibly."""

META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.pt"
WEIGHTS_SUFFIX = ".safetensors"


@dataclass(frozen=True)
class CheckpointInfo:
    """One completed checkpoint folder, as listed (not yet verified)."""

    path: Path
    run_id: str
    task: str
    step: int
    time: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LoadedCheckpoint:
    """A verified, decoded checkpoint: what a resume or an evaluation needs."""

    info: CheckpointInfo
    weights: dict[str, dict[str, torch.Tensor]]
    train_state: dict[str, Any]
    meta: dict[str, Any]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def file_entry(data: bytes | memoryview) -> dict[str, Any]:
    """The manifest entry of one file's content."""
    return {"sha256": sha256_hex(data), "size": memoryview(data).nbytes}


def read_meta(step_dir: Path) -> dict[str, Any]:
    """Parse `meta.json`, or raise CheckpointError saying why the folder has no usable manifest."""
    path = Path(step_dir) / META_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (checkpoint incomplete)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise CheckpointError(f"{path}: no file manifest; not a tinycats checkpoint")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r} is not readable by this tinycats "
            f"(reads <= {FORMAT_VERSION}); upgrade tinycats"
        )
    return doc


def info_from_meta(step_dir: Path, doc: dict[str, Any]) -> CheckpointInfo:
    return CheckpointInfo(
        path=Path(step_dir),
        run_id=str(doc.get("run_id", "")),
        task=str(doc.get("task", "")),
        step=int(doc["step"]),
        time=float(doc.get("time", 0.0)),
        metrics={k: float(v) for k, v in (doc.get("metrics") or {}).items()},
    )


def _check_blob(path: Path, entry: dict[str, Any], data: bytes | None) -> str | None:
    """Why `data` (None = file missing) does not match its manifest entry, or None if it does."""
    if data is None:
        return f"{path}: missing"
    if len(data) != entry.get("size"):
        return f"{path}: size mismatch (manifest {entry.get('size')} bytes, found {len(data)})"
    if sha256_hex(data) != entry.get("sha256"):
        return f"{path}: sha256 mismatch (content changed or corrupted)"
    return None


def iter_checked_files(
    step_dir: Path, doc: dict[str, Any]
) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(name, content or None, problem or None) for every file the manifest lists.

    Each file is read once; callers decode the same bytes they verified.
    """
    for name, entry in sorted(doc["files"].items()):
        path = Path(step_dir) / name
        if Path(name).name != name:
            yield name, None, f"{path}: manifest names a file outside the checkpoint folder"
            continue
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        yield name, data, _check_blob(path, entry, data)


def decode_weights(path: Path, data: bytes, map_location: str) -> dict[str, torch.Tensor]:
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None
    if map_location != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return tensors


def decode_train_state(path: Path, data: bytes, map_location: str) -> dict[str, Any]:
    """Load with weights_only=True: a pickled callable is refused, never executed."""
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message opens with advice to retry unsafely; keep only the line naming
        # what was refused (e.g. "unsupported GLOBAL posix.system").
        lines = [line.strip() for line in str(err).splitlines()]
        named = [
            line for line in lines if "global" in line.lower() or "unsupported" in line.lower()
        ]
        reason = named[0] if named else "objects other than tensors and plain containers"
        raise CheckpointError(
            f"{path}: unsafe pickle refused by weights_only load ({reason}); "
            "only load checkpoints written by tinycats"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(f"{path}: not a readable torch file ({first.strip()})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a dict")
    return state


def decode_files(
    step_dir: Path, blobs: dict[str, bytes], map_location: str
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Verified file contents → (weights by name, train_state)."""
    weights: dict[str, dict[str, torch.Tensor]] = {}
    train_state: dict[str, Any] = {}
    for name, data in blobs.items():
        path = Path(step_dir) / name
        if name.endswith(WEIGHTS_SUFFIX):
            weights[name.removesuffix(WEIGHTS_SUFFIX)] = decode_weights(path, data, map_location)
        elif name == TRAIN_STATE_FILE:
            train_state = decode_train_state(path, data, map_location)
    return weights, train_state


def load_checkpoint(path: Path, map_location: str = "cpu") -> LoadedCheckpoint:
    """Verify one step folder and decode it; CheckpointError names the file and the reason."""
    step_dir = Path(path)
    doc = read_meta(step_dir)
    blobs: dict[str, bytes] = {}
    for name, data, problem in iter_checked_files(step_dir, doc):
        if problem is not None:
            raise CheckpointError(problem)
        assert data is not None  # no problem means the file was read
        blobs[name] = data
    weights, train_state = decode_files(step_dir, blobs, map_location)
    return LoadedCheckpoint(
        info=info_from_meta(step_dir, doc),
        weights=weights,
        train_state=train_state,
        meta=doc.get("meta") or {},
    )


def verify_checkpoint(path: Path) -> list[str]:
    """Every problem found in one step folder ([] = good): manifest, sizes, hashes, safe decoding."""
    step_dir = Path(path)
    try:
        doc = read_meta(step_dir)
    except CheckpointError as err:
        return [str(err)]
    problems: list[str] = []
    blobs: dict[str, bytes] = {}
    for name, data, problem in iter_checked_files(step_dir, doc):
        if problem is not None:
            problems.append(problem)
        elif data is not None:
            blobs[name] = data
    if problems:
        return problems
    try:
        decode_files(step_dir, blobs, "cpu")
    except CheckpointError as err:
        problems.append(str(err))
    return problems
