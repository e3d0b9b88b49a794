"""What a cloud run asks Modal for, as pure functions of the TrainConfig.

Everything Modal is told (GPU, timeout per attempt, retry policy, volumes and where
they are mounted, image environment, pinned requirements) is computed here from the
validated config, without importing `modal`. That keeps the numbers testable
offline, and keeps `modal_app.py` a thin story of decorators fed by these values.

The settings the App is built with at import time travel to the container in one
environment variable (`SETTINGS_ENV`), so the container re-imports the very same
App (same volume names) the client deployed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinycats.config import ModalConfig, RetryConfig, TrainConfig, validate_config
from tinycats.errors import ConfigError
from tinycats.gpus import modal_gpu_argument

MINUTES = 60
"""Seconds in a minute: Modal takes timeouts in seconds, the config says minutes."""

PYTHON_VERSION = "3.12"
DATA_MOUNT = "/data"
"""Data volume: prepared shards under it, pretrained weights under TORCH_HOME."""
OUTPUTS_MOUNT = "/outputs"
"""Outputs volume: the Store root (checkpoints/, runs/, reports/, samples/)."""
TORCH_HOME = f"{DATA_MOUNT}/torch"

SETTINGS_ENV = "TINYCATS_MODAL_SETTINGS"
"""JSON of {"modal": ModalConfig, "retries": RetryConfig} the App is built from."""

REQUIREMENTS_FILE = Path(__file__).resolve().parents[3] / "requirements-modal.txt"
"""At the repository root (the package is installed editable for cloud use): the direct
dependencies of the GPU image, pinned."""
LOCK_FILE = REQUIREMENTS_FILE.with_suffix(".lock")
"""Every package the image installs, resolved from REQUIREMENTS_FILE for Linux x86_64 and
Python 3.12 by `uv pip compile` (its header has the command); installed with --no-deps."""
UV_VERSION = "0.13.9"
"""The uv binary the image builds with (modal 1.6.4 `Image.uv_pip_install(uv_version=)`;
unpinned it copies ghcr.io/astral-sh/uv:latest, and a new uv can resolve differently)."""

PREPARE_CPU = 2.0
PREPARE_MEMORY_MB = 8192
PREPARE_TIMEOUT_S = 2 * 60 * 60
"""The CPU-only preparation function: a first Oxford download (~800 MB) and decode."""

MAX_PLATFORM_RESTARTS = 8
"""Modal restarts an input lost to preemption at once, without using a retry, up to this
many times (modal 1.6.4 `_functions.MAX_INTERNAL_FAILURE_COUNT`)."""

MIN_RETRY_DELAY = 1.0
"""Modal never waits less than 1 s between attempts (`retries.MIN_INPUT_RETRY_DELAY_MS`)."""

TORCH_VISION_PAIRS = {
    "2.0": "0.15",
    "2.1": "0.16",
    "2.2": "0.17",
    "2.3": "0.18",
    "2.4": "0.19",
    "2.5": "0.20",
    "2.6": "0.21",
    "2.7": "0.22",
    "2.8": "0.23",
    "2.9": "0.24",
    "2.10": "0.25",
    "2.11": "0.26",
    "2.12": "0.27",
    "2.13": "0.28",
    "2.14": "0.29",
}
"""torch minor → the torchvision minor built against it (pytorch/vision's compatibility
table); a mismatched pair fails at import with undefined C++ symbols on the GPU image."""


# -- retries ---------------------------------------------------------------------------------


def retry_kwargs(retries: RetryConfig) -> dict[str, float | int]:
    """Keyword arguments of `modal.Retries(...)`; RetryConfig already holds Modal's bounds."""
    return {
        "max_retries": retries.max_retries,
        "backoff_coefficient": retries.backoff_coefficient,
        "initial_delay": retries.initial_delay,
        "max_delay": retries.max_delay,
    }


def retry_delay(retries: RetryConfig, retry_number: int) -> float:
    """Seconds Modal waits before retry `retry_number` (1-based).

    Modal's RetryManager: initial_delay × backoff^(n-1), at least 1 s; `max_delay` caps it.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number={retry_number} must be at least 1")
    raw = retries.initial_delay * retries.backoff_coefficient ** (retry_number - 1)
    return min(retries.max_delay, max(MIN_RETRY_DELAY, raw))


def retry_delays(retries: RetryConfig) -> list[float]:
    """The whole schedule: one delay per allowed retry."""
    return [retry_delay(retries, n) for n in range(1, retries.max_retries + 1)]


# -- per-call resources ----------------------------------------------------------------------


def timeout_seconds(modal_cfg: ModalConfig) -> int:
    """One call's time limit; a longer run continues in a new call (training.py)."""
    return modal_cfg.timeout_minutes * MINUTES


def attempt_budget_seconds(timeout: float) -> float:
    """When a slice stops itself: leave time to checkpoint, commit and spawn the next call
    before Modal's hard timeout (max(60 s, 5 %), never more than half the slice)."""
    margin = min(max(60.0, 0.05 * timeout), timeout / 2)
    return timeout - margin


def call_options(config: TrainConfig, gpu: str | None = None) -> dict[str, Any]:
    """What `Cls.with_options` / `Function.with_options` receive for one call.

    `with_options(gpu=...)` takes one string (modal 1.6.4 `_Function.with_options`), so a
    fallback list is not passed: the call then runs on the list the App was deployed
    with (`@app.cls(gpu=[...])`, the only place the client accepts a list). `retries`
    is left as kwargs; the caller turns it into `modal.Retries`.
    """
    modal_cfg = config.modal
    if gpu is not None:  # validated like `--set modal.gpu=...`: a one-line ConfigError
        raw = config.to_dict()
        modal_cfg = validate_config({**raw, "modal": {**raw["modal"], "gpu": gpu}}).modal
    options: dict[str, Any] = {
        "timeout": timeout_seconds(modal_cfg),
        "cpu": modal_cfg.cpu,
        "memory": modal_cfg.memory_mb,
        "scaledown_window": modal_cfg.scaledown_window_s,
        "retries": retry_kwargs(config.retries),
    }
    gpu_argument = modal_gpu_argument(modal_cfg.gpu)
    if isinstance(gpu_argument, str):
        options["gpu"] = gpu_argument
    return options


def leases_dict_name(modal_cfg: ModalConfig) -> str:
    """The modal.Dict holding the App's run leases (cloud/lease.py)."""
    return f"{modal_cfg.app_name}-leases"


def volume_names(modal_cfg: ModalConfig) -> dict[str, str]:
    """Mount path → volume name."""
    return {DATA_MOUNT: modal_cfg.data_volume, OUTPUTS_MOUNT: modal_cfg.outputs_volume}


def image_env() -> dict[str, str]:
    """Container environment: caches on the data volume, unbuffered logs, less fragmentation."""
    return {
        "TORCH_HOME": TORCH_HOME,
        "PYTHONUNBUFFERED": "1",  # logs reach `modal app logs` as they happen
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
        "TOKENIZERS_PARALLELISM": "false",
    }


def with_data_dir(config: TrainConfig, data_root: Path | str) -> TrainConfig:
    """The config with `data.dir` pointed at the data volume's mount."""
    data = config.data.model_copy(update={"dir": str(data_root)})
    return config.model_copy(update={"data": data})


# -- settings that must be identical on the client and in the container ----------------------


def settings_env(modal_cfg: ModalConfig, retries: RetryConfig) -> dict[str, str]:
    """The environment variable that rebuilds the same App in the container."""
    doc = {"modal": modal_cfg.model_dump(mode="json"), "retries": retries.model_dump()}
    return {SETTINGS_ENV: json.dumps(doc, sort_keys=True)}


def settings_from_env(environ: Mapping[str, str] | None = None) -> tuple[ModalConfig, RetryConfig]:
    """(ModalConfig, RetryConfig) from SETTINGS_ENV, else the defaults of config.py."""
    raw = (os.environ if environ is None else environ).get(SETTINGS_ENV)
    if not raw:
        return ModalConfig(), RetryConfig()
    try:
        doc = json.loads(raw)
        return ModalConfig.model_validate(doc["modal"]), RetryConfig.model_validate(doc["retries"])
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{SETTINGS_ENV} is not valid ({err}); unset it and retry") from None


# -- pinned requirements ---------------------------------------------------------------------

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")


def read_requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """name → exact version; every non-comment line must be `name==version`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path} not found; install tinycats from a source checkout (pip install -e .)"
        ) from None
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: {line!r} is not pinned; write name==version")
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def check_torch_pair(pins: Mapping[str, str]) -> None:
    """Raise ConfigError unless torch and torchvision are pinned to a matching pair."""
    torch, vision = pins.get("torch"), pins.get("torchvision")
    if torch is None or vision is None:
        raise ConfigError("requirements-modal.txt must pin both torch and torchvision")
    expected = TORCH_VISION_PAIRS.get(_minor(torch))
    if expected is None:
        raise ConfigError(f"torch=={torch} is not in the known pair table; add it to resources.py")
    if _minor(vision) != expected:
        raise ConfigError(
            f"torch=={torch} needs torchvision {expected}.x, got torchvision=={vision}; fix "
            "requirements-modal.txt"
        )
