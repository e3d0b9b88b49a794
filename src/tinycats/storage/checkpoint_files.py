"""Writing a checkpoint's files: safetensors weights and the train state, fsynced and hashed.

A writer thread streams the weights to disk while the calling thread serialises
the train state, and a hasher thread computes the sha256s the manifest lists: disk
I/O, safetensors' writer and hashlib release the GIL, so serialising and hashing
hide behind the disk instead of adding to it (benchmarks/checkpoint_write.py).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file as safetensors_save_file

from tinycats.storage.atomic import write_file_synced
from tinycats.storage.manifest import TRAIN_STATE_FILE, WEIGHTS_SUFFIX, file_entry

WEIGHTS_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")


def write_checkpoint_files(
    folder: Path, weights: dict[str, dict[str, torch.Tensor]], train_state: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Write + fsync `<key>.safetensors` per weights entry and `train_state.pt` into `folder`.

    Returns the manifest entry (sha256, size) of every file written.
    """
    for key in weights:
        if not WEIGHTS_KEY_RE.match(key):
            raise ValueError(f"weights key {key!r} must be letters, digits and '_' (a file name)")
    tensors = {
        key + WEIGHTS_SUFFIX: _cpu_contiguous(state_dict, f"weights[{key!r}]")
        for key, state_dict in weights.items()
    }
    with ThreadPoolExecutor(1) as writer, ThreadPoolExecutor(1) as hasher:
        writes: list[Future[None]] = []
        entries: dict[str, Future[dict[str, Any]]] = {}
        for name, file_tensors in tensors.items():
            writes.append(writer.submit(_save_tensors_synced, folder / name, file_tensors))
            entries[name] = hasher.submit(_hash_file, folder / name, writes[-1])
        buffer = io.BytesIO()
        torch.save(train_state, buffer)
        blob = buffer.getbuffer()
        writes.append(writer.submit(write_file_synced, folder / TRAIN_STATE_FILE, blob))
        entries[TRAIN_STATE_FILE] = hasher.submit(file_entry, blob)
        for write in writes:
            write.result()
        return {name: entry.result() for name, entry in entries.items()}


def _cpu_contiguous(state_dict: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Tensors safetensors accepts: CPU, contiguous, no two sharing memory (e.g. tied weights)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"{where}[{name!r}] is a {type(tensor).__name__}; weights hold tensors only "
                "(put other values in train_state)"
            )
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage()
        shared = tensor.numel() > 0 and storage.data_ptr() in seen
        if shared or not tensor.is_contiguous() or storage.nbytes() != tensor.nbytes:
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        if tensor.numel() > 0:
            seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _save_tensors_synced(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors straight from tensor memory to disk (no bytes copy), then fsync."""
    try:
        safetensors_save_file(tensors, path)
    except SafetensorError as err:
        if "os error 28" in str(err):  # the Rust writer's ENOSPC
            raise OSError(errno.ENOSPC, str(err)) from None
        raise
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: Path, written: Future[None]) -> dict[str, Any]:
    """Manifest entry of a file once `written` completes, read back from the page cache."""
    written.result()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "size": path.stat().st_size}
