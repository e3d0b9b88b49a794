"""`tinycats doctor`: versions, device, Modal credentials and free disk, at a glance."""

from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from tinycats.cli.common import (
    DEFAULT_OUT_PATH,
    JsonOption,
    OutOption,
    print_json,
    print_pairs,
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _device() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        from tinycats.train.device import cuda_amp_auto

        return {
            "device": "cuda",
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "amp_auto": cuda_amp_auto(),
        }
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return {"device": "mps", "gpus": []}
    from tinycats.train.device import cpu_has_native_bf16

    return {
        "device": "cpu",
        "gpus": [],
        "threads": torch.get_num_threads(),
        "cpu_bf16": cpu_has_native_bf16(),
    }


def _modal_credentials() -> str:
    if os.environ.get("MODAL_TOKEN_ID") and os.environ.get("MODAL_TOKEN_SECRET"):
        return "present (environment)"
    if (Path.home() / ".modal.toml").exists():
        return "present (~/.modal.toml)"
    return "absent: run `modal token new` to use `tinycats cloud`"


def _free_space(out: Path) -> dict[str, Any]:
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe if probe.exists() else Path.cwd())
    return {"path": str(out.resolve()), "free_gb": round(usage.free / 1e9, 2)}


def collect(out: Path) -> dict[str, Any]:
    """Everything doctor reports, as a dict (also the --json output)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            p: _version(p)
            for p in ("tinycats", "torch", "torchvision", "safetensors", "numpy", "pillow", "modal")
        },
        **_device(),
        "modal_credentials": _modal_credentials(),
        "out": _free_space(out),
    }


def doctor(out: OutOption = DEFAULT_OUT_PATH, json_: JsonOption = False) -> None:
    """Report versions, device (CPU/CUDA/MPS), Modal credentials and free disk space."""
    report = collect(out)
    if json_:
        print_json(report)
        return
    gpus = ", ".join(report["gpus"])
    pairs = [
        ("python", report["python"]),
        ("platform", report["platform"]),
        *report["versions"].items(),
        ("device", report["device"] + (f" ({gpus})" if gpus else "")),
    ]
    if "amp_auto" in report:
        pairs.append(("optim.amp=auto", report["amp_auto"]))
    if "cpu_bf16" in report:
        pairs.append(
            (
                "cpu bf16 units",
                "yes: optim.amp=bf16 trains 1.5-2.7x faster (configs/classifier-cpu.toml)"
                if report["cpu_bf16"]
                else "no: keep optim.amp=off, bf16 is emulated (configs/classifier-cpu-fp32.toml)",
            )
        )
    pairs.append(("modal credentials", report["modal_credentials"]))
    pairs.append(("output dir", f"{report['out']['path']} ({report['out']['free_gb']} GB free)"))
    print_pairs(pairs)
