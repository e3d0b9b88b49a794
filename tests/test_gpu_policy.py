"""GPU honesty without a GPU: the precision a CUDA device gets, and what doctor says.

`torch.cuda.is_bf16_supported()` is replaced by one that answers as torch does on a
T4 (Turing: bf16 only through emulation) or on an Ampere-or-later GPU.
"""

from __future__ import annotations

import pytest
import torch

from tinycats.cli import doctor
from tinycats.train.device import autocast_dtype


def fake_gpu(monkeypatch: pytest.MonkeyPatch, name: str, native_bf16: bool) -> None:
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native_bf16 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)


@pytest.mark.parametrize(
    ("name", "native", "expected", "said"),
    [
        ("Tesla T4", False, torch.float16, "fp16 with a grad scaler"),
        ("NVIDIA A10G", True, torch.bfloat16, "bf16 (native"),
        ("NVIDIA H100 80GB HBM3", True, torch.bfloat16, "bf16 (native"),
    ],
)
def test_amp_auto_picks_bf16_only_where_the_gpu_does_it_natively(
    monkeypatch: pytest.MonkeyPatch, name: str, native: bool, expected, said: str, tmp_path
) -> None:
    fake_gpu(monkeypatch, name, native)
    assert autocast_dtype("auto", torch.device("cuda")) == expected
    assert autocast_dtype("bf16", torch.device("cuda")) == torch.bfloat16  # asked for: given
    report = doctor.collect(tmp_path)
    assert report["gpus"] == [name] and report["amp_auto"].startswith(said)
