"""The local side of `tinycats cloud ...`: deploy the App, call it, spawn it, fetch results.

Each command deploys the App first (`app.deploy()`: a no-op rebuild when nothing
changed, and a deployed App is what memory snapshots and detached calls need), then
calls the deployed function with the per-call GPU, timeout and retries of the config.
The run id is fixed here, before the first attempt, so every retry resumes that run.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from tinycats.cloud import resources as res
from tinycats.config import TrainConfig
from tinycats.errors import TinycatsError

APP_MODULE = "tinycats.cloud.modal_app"

TARGETS = {"build": 120.0, "cold": 20.0, "warm": 2.0}
"""The original plan's start-up targets, in seconds: image build, cold start, warm start."""


class CloudError(TinycatsError):
    """Modal is not set up, or a remote call could not be made."""


def load_app(config: TrainConfig) -> ModuleType:
    """The modal_app module built with this config's Modal settings and retry policy."""
    os.environ.update(res.settings_env(config.modal, config.retries))
    module = importlib.import_module(APP_MODULE)
    if config.modal != module.MODAL_CONFIG or config.retries != module.RETRY_CONFIG:
        module = importlib.reload(module)
    return module


@contextmanager
def deployed(config: TrainConfig) -> Iterator[ModuleType]:
    """Deploy the App (showing Modal's build output) and yield its hydrated module."""
    import modal

    module = load_app(config)
    try:
        with modal.enable_output():
            module.app.deploy(name=config.modal.app_name)
    except modal.exception.AuthError as err:
        raise CloudError(f"Modal rejected the credentials ({err}); run `modal token new`") from None
    yield module


def _with_options(target: Any, config: TrainConfig, gpu: str | None) -> Any:
    import modal

    options = res.call_options(config, gpu)
    options["retries"] = modal.Retries(**options["retries"])
    return target.with_options(**options)


def prepare(config: TrainConfig) -> dict[str, Any]:
    with deployed(config) as module:
        return module.prepare_data.remote(config.to_dict())


def train(
    config: TrainConfig,
    layer: dict[str, Any],
    run_id: str,
    *,
    gpu: str | None = None,
    detach: bool = False,
) -> dict[str, Any]:
    """Run (or, with `detach`, spawn) one training call; the run id is already fixed.

    `config` (resolved) sets the call's resources; `layer` (the user's file and --set
    choices) is what the container applies over the run's saved config or the defaults.
    """
    with deployed(config) as module:
        trainer = _with_options(module.Trainer, config, gpu)()
        if detach:
            call = trainer.train.spawn(config.task, layer, run_id)
            return {
                "run_id": run_id,
                "call_id": call.object_id,
                "app": config.modal.app_name,
                "dashboard": _dashboard_url(call),
            }
        return trainer.train.remote(config.task, layer, run_id)


def _dashboard_url(call: Any) -> str | None:
    try:
        return call.get_dashboard_url()
    except Exception:  # informational only; never fail a spawned run over a URL
        return None


def evaluate(
    config: TrainConfig, run_id: str, *, split: str, which: str, gpu: str | None
) -> dict[str, Any]:
    with deployed(config) as module:
        return _with_options(module.evaluate, config, gpu).remote(run_id, split, which)


def sample(
    config: TrainConfig, run_id: str, options: dict[str, Any], *, gpu: str | None
) -> dict[str, Any]:
    with deployed(config) as module:
        return _with_options(module.sample, config, gpu).remote(run_id, options)


def result(call_id: str, timeout: float = 0.0) -> tuple[bool, Any]:
    """(done, value) of a spawned call; not done while it is still running."""
    import modal

    call = modal.FunctionCall.from_id(call_id)
    try:
        return True, call.get(timeout=timeout)
    except TimeoutError:
        return False, None


def bench(
    config: TrainConfig, *, gpu: str | None = None, rebuild: bool = False, idle_seconds: float = 20
) -> list[dict[str, Any]]:
    """Measure build, cold start (with and without snapshot) and warm start on a real account.

    `rebuild` forces the image to build from scratch (MODAL_FORCE_BUILD), so the first
    row is a true build time; otherwise it is the deploy time with cached layers.
    Containers are given the shortest scale-down window so that, after `idle_seconds`,
    the next call must start a new container (restored from the snapshot).
    """
    if rebuild:
        os.environ["MODAL_FORCE_BUILD"] = "1"
    started = time.perf_counter()
    with deployed(config) as module:
        deploy_seconds = time.perf_counter() - started
        os.environ.pop("MODAL_FORCE_BUILD", None)

        def timed(cls: Any) -> tuple[float, dict[str, Any]]:
            obj = _with_options(cls, config, gpu).with_options(scaledown_window=2)()
            t0 = time.perf_counter()
            info = obj.ping.remote()
            return time.perf_counter() - t0, info

        baseline, _ = timed(module.TrainerNoSnapshot)
        first, _ = timed(module.Trainer)  # the first start also takes the snapshot
        time.sleep(idle_seconds)  # let that container scale down
        restored, info = timed(module.Trainer)
        warm, _ = timed(module.Trainer)
    return [
        {
            "what": "image build" if rebuild else "deploy",
            "seconds": deploy_seconds,
            "target": TARGETS["build"],
        },
        {"what": "cold start, no snapshot", "seconds": baseline, "target": TARGETS["cold"]},
        {"what": "cold start, taking snapshot", "seconds": first, "target": None},
        {"what": "cold start, from snapshot", "seconds": restored, "target": TARGETS["cold"]},
        {"what": "warm start", "seconds": warm, "target": TARGETS["warm"]},
        {
            "what": "  of which CUDA warm-up",
            "seconds": info.get("warmup_seconds", 0.0),
            "target": None,
        },
    ]
