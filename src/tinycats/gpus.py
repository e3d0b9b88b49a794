"""GPU requests as Modal spells them, checked without importing Modal.

A request is one GPU type (`"A10G"`), a type with a count (`"H100:4"`: four GPUs in one
container), or a fallback list in order of preference (`"H100,A100-80GB"`: Modal tries
each type in turn when it scales up). Names are case-insensitive, as in the client
(modal 1.6.4 `_utils/function_utils.py parse_gpu_config` upper-cases the type and
splits the count at `:`); which names exist is the server's list, copied from Modal's
GPU guide (modal.com/docs/guide/gpu, read 2026-12): T4, L4, A10, L40S, A100,
A100-40GB, A100-80GB, RTX-PRO-6000, H100/H100!, H200, B200/B200+; up to 8 per
container, A10 up to 4. A10G is the older name of the A10, still accepted.

The parsing is shared: the config validates `modal.gpu` with it, the cloud layer turns
it into Modal's argument, and the cost estimate prices each entry.
"""

from __future__ import annotations

from dataclasses import dataclass

GPU_MEMORY_GB = {
    "T4": 16,
    "L4": 24,
    "A10": 24,
    "A10G": 24,
    "L40S": 48,
    "A100": 40,
    "A100-40GB": 40,
    "A100-80GB": 80,
    "RTX-PRO-6000": 96,
    "H100": 80,
    "H100!": 80,
    "H200": 141,
    "B200": 192,
    "B200+": 192,
}
"""Every GPU type Modal accepts → its memory in GB."""

MAX_GPUS = {"A10": 4, "A10G": 4}
"""Most GPUs of a type in one container where it is not 8."""
DEFAULT_MAX_GPUS = 8


@dataclass(frozen=True)
class GpuRequest:
    """One entry of a request: a GPU type and how many of it one container gets."""

    type: str
    count: int = 1

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


def parse_gpu_spec(spec: str) -> list[GpuRequest]:
    """`"H100:4"` or `"H100,A100-80GB"` → the entries in order; ValueError naming the fix."""
    entries = [part.strip() for part in str(spec).split(",")]
    if not all(entries):
        raise ValueError(f"GPU request {spec!r} has an empty entry; write e.g. H100,A100-80GB")
    requests = [_parse_entry(entry) for entry in entries]
    if len({r.type for r in requests}) != len(requests):
        raise ValueError(f"GPU request {spec!r} names a type twice")
    return requests


def _parse_entry(entry: str) -> GpuRequest:
    name, sep, count_text = entry.partition(":")
    name = name.strip().upper()
    if name not in GPU_MEMORY_GB:
        raise ValueError(f"unknown GPU {entry!r}; choose one of {', '.join(GPU_MEMORY_GB)}")
    count = 1
    if sep:
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(
                f"GPU count in {entry!r} must be a whole number, e.g. H100:4"
            ) from None
    limit = gpus_per_host(name)
    if not 1 <= count <= limit:
        raise ValueError(f"GPU count in {entry!r} must be 1 to {limit} per container")
    return GpuRequest(name, count)


def gpus_per_host(gpu_type: str) -> int:
    """The most GPUs of a type one container can get: all of its host's."""
    return MAX_GPUS.get(gpu_type, DEFAULT_MAX_GPUS)


def whole_host(spec: str) -> bool:
    """True when `spec` is one type with every GPU of its host (`H100:8`): what each
    container of a Modal cluster must request (modal 1.6.4 `modal.clustered`)."""
    requests = parse_gpu_spec(spec)
    return len(requests) == 1 and requests[0].count == gpus_per_host(requests[0].type)


def modal_gpu_argument(spec: str) -> str | list[str]:
    """What `@app.function(gpu=...)` takes: a string for one entry, a list for fallbacks."""
    requests = [str(r) for r in parse_gpu_spec(spec)]
    return requests[0] if len(requests) == 1 else requests
