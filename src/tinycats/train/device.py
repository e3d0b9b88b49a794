"""Device and precision policy: where a run trains, and in which dtype its forward pass runs."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def select_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16), where oneDNN's
    bf16 convolutions are fast; elsewhere they are emulated and slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cuda_has_native_bf16() -> bool:
    """Whether this GPU computes bf16 in hardware (Ampere, sm_80, and later).

    `torch.cuda.is_bf16_supported()` defaults to `including_emulation=True` and so says
    yes on a T4 (Turing), where bf16 runs emulated and slower than fp16; auto must not
    pick it there."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def cuda_amp_auto() -> str:
    """What `optim.amp=auto` trains in on this GPU, in words (for `tinycats doctor`)."""
    if cuda_has_native_bf16():
        return "bf16 (native on this GPU)"
    return "fp16 with a grad scaler (this GPU has no native bf16)"


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training forward pass, or None for plain fp32.

    CUDA: bf16 where the GPU does it natively, else fp16 (with a grad scaler). CPU: only an explicit
    `bf16`; `auto` stays fp32 there, so the default run means the same on every CPU, and
    bf16 pays only on CPUs with bf16 units (ResNet-18 training 2.1-2.4x faster on two
    Sapphire Rapids cores: benchmarks/amp_throughput.py).
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not cuda_has_native_bf16()):
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu" and amp == "bf16":
        if not cpu_has_native_bf16():
            log.warning(
                "optim.amp=bf16 on a CPU without AMX/AVX512-BF16 is emulated, several times "
                "slower than fp32; set optim.amp=off on this machine (the classifier "
                "recipe for it: configs/classifier-cpu-fp32.toml)"
            )
        return torch.bfloat16
    if amp != "auto":
        log.info("optim.amp=%s has no effect on %s; training in fp32", amp, device.type)
    return None


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
    """The forward pass's autocast region (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
