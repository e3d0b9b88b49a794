"""The local side of `tinycats cloud ...`: deploy the App, check, launch, bench.

Launching commands (prepare, train, eval, sample, bench) deploy the App first
(`app.deploy()`: a no-op rebuild when nothing changed; memory snapshots and spawned
calls need a deployed App). Redeploying never changes a live run: its later calls take
their settings from the run's record (training.py). Commands about calls already made
(result, logs, cancel: calls.py) and about files (volume) deploy nothing.

Before anything is billed, the client checks what it can: the config (validated in
the CLI), the run's record on the outputs volume (a run id of another task is refused
here), and the prepared data (built first by the CPU-only `prepare_data` function, so a
GPU never prepares data). The run id is fixed here, before the first attempt.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from tinycats.cloud import calls, pricing
from tinycats.cloud import resources as res
from tinycats.cloud.calls import CloudError
from tinycats.config import TrainConfig
from tinycats.errors import ConfigError
from tinycats.gpus import parse_gpu_spec

APP_MODULE = "tinycats.cloud.modal_app"

TARGETS = {"build": 120.0, "cold": 20.0, "warm": 2.0}
"""The original plan's start-up targets, in seconds: image build, cold start, warm start."""

__all__ = ["CloudError", "bench", "check_run", "estimate_line", "prepare", "train"]


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


def shipped_gpu_configs() -> list[Path]:
    """The repository's GPU recipes (configs/*-gpu.toml), whose data `cloud prepare` builds."""
    return sorted((res.REQUIREMENTS_FILE.parent / "configs").glob("*-gpu.toml"))


def prepare(config: TrainConfig) -> dict[str, Any]:
    """Build the config's dataset on the data volume in the CPU-only function."""
    with deployed(config) as module:
        return calls.outcome_of(module.prepare_data.remote(config.to_dict()))


def check_run(config: TrainConfig, run_id: str, task: str) -> dict[str, Any] | None:
    """The run's record from the outputs volume (None for a new run); refuses a run of
    another task, or a global batch the GPUs of one container cannot share, here, before
    a GPU is started for it."""
    nodes = config.modal.nodes
    for request in parse_gpu_spec(config.modal.gpu):
        ranks = request.count * nodes
        if config.optim.batch_size % ranks:
            where = f"{request}" if nodes == 1 else f"{nodes} containers of {request}"
            raise ConfigError(
                f"optim.batch_size={config.optim.batch_size} does not split over the "
                f"{ranks} GPUs of {where} (one data-parallel rank each); choose a "
                f"multiple of {ranks}"
            )
    record = calls.read_remote_json(config.modal.outputs_volume, f"runs/{run_id}.json")
    if record is not None and record.get("task") != task:
        raise ConfigError(
            f"run {run_id!r} is a {record.get('task')} run, not {task}; pass the task it was "
            "started with or a new --run-id"
        )
    return record


def check_not_live(config: TrainConfig, run_id: str, kv: Any = None) -> None:
    """Refuse to launch a run that a live call is training (its lease), before any GPU."""
    from tinycats.cloud.lease import RunLease
    from tinycats.storage.run_lock import RunBusy

    if kv is None:
        import modal

        try:
            kv = modal.Dict.from_name(res.leases_dict_name(config.modal))
            kv.hydrate()
        except modal.exception.NotFoundError:
            return  # no lease was ever taken in this App
    holder = RunLease(kv, run_id, "client").live_holder()
    if holder is not None:
        raise RunBusy(
            f"run {run_id} is being trained by call {holder['call']}; follow it with "
            f"`tinycats cloud logs {run_id}` or stop it with `tinycats cloud cancel {run_id}`"
        )


def estimate_line(config: TrainConfig) -> str:
    """What one slice can cost at most, before launch (prices dated; see pricing.py)."""
    modal_cfg = config.modal
    cost = pricing.estimate(
        modal_cfg.gpu,
        modal_cfg.cpu,
        modal_cfg.memory_mb,
        modal_cfg.timeout_minutes * 60,
        modal_cfg.nodes,
    )
    if cost.total_usd is None:
        return f"no price known for {cost.gpu}; see https://modal.com/pricing"
    ranks = ""
    if any(request.count > 1 for request in parse_gpu_spec(modal_cfg.gpu)):
        ranks = " (every GPU of the container trains: one data-parallel rank each)"
    where = cost.gpu if cost.nodes == 1 else f"a cluster of {cost.nodes} × {cost.gpu}"
    return (
        f"at most ${cost.total_usd:.2f} per {modal_cfg.timeout_minutes}-minute slice on "
        f"{where} (list prices of {pricing.PRICES_AS_OF}); the run record gets the "
        f"measured GPU-seconds and cost{ranks}"
    )


def train(
    config: TrainConfig,
    layer: dict[str, Any],
    run_id: str,
    *,
    detach: bool = False,
    on_next=None,
) -> dict[str, Any]:
    """Spawn the run's first call and, unless `detach`, follow it across its slices.

    Always spawned, never `.remote()`: retries of a spawned call are the server's, so the
    run survives this client (for `.remote()` the 1.6.4 client itself re-submits failed
    inputs in `_Invocation.run_function`, and stops when it is interrupted). `config`
    (resolved) sets the call's resources; `layer` (the user's file and --set choices) is
    what the container applies over the run's saved config or the defaults.
    """
    if check_run(config, run_id, config.task) is not None:
        check_not_live(config, run_id)
    with deployed(config) as module:
        prepared = calls.outcome_of(module.prepare_data.remote(config.to_dict()))
        trainer = _with_options(module.trainer_class(config.modal.nodes), config, None)()
        call = trainer.train.spawn(config.task, layer, run_id)
        launched = {
            "run_id": run_id,
            "call_id": call.object_id,
            "app": config.modal.app_name,
            "dashboard": _dashboard_url(call),
            "data": prepared,
        }
    if detach:
        return launched
    try:
        _, value = calls.follow(call.object_id, on_next=on_next)
    except KeyboardInterrupt:
        raise CloudError(
            f"stopped waiting; run {run_id} keeps running in call {call.object_id}: "
            f"`tinycats cloud logs {run_id}`, `tinycats cloud cancel {run_id}`"
        ) from None
    return value


def local_entrypoint_train(
    trainer_class: Any, task: str, config_path: str, run_id: str, max_steps: int, gpu: str
) -> str:
    """The body of `modal run -m tinycats.cloud.modal_app`: build the config as the CLI does,
    call the running App's trainer (`trainer_class(nodes)`) and follow the run; returns
    the summary line."""
    from pathlib import Path

    from tinycats.config import layered_config
    from tinycats.storage import new_run_id

    flags = {"optim.max_steps": max_steps or None, "modal.gpu": gpu or None}
    file = Path(config_path) if config_path else None
    config, layer = layered_config(task, file, (), flags)
    run_id = run_id or new_run_id(task)
    check_run(config, run_id, task)
    trainer = _with_options(trainer_class(config.modal.nodes), config, None)()
    call = trainer.train.spawn(task, layer, run_id)
    print(f"{run_id}: call {call.object_id}; {estimate_line(config)}", flush=True)
    _, value = calls.follow(call.object_id)
    return f"{value['status']} {run_id} at step {value['step']}/{value['max_steps']}"


def _dashboard_url(call: Any) -> str | None:
    try:
        return call.get_dashboard_url()
    except Exception:  # informational only; never fail a spawned run over a URL
        return None


def evaluate(
    config: TrainConfig, run_id: str, *, split: str, which: str, gpu: str | None
) -> dict[str, Any]:
    existing_run(config, run_id, "classifier", "eval")
    with deployed(config) as module:
        return calls.outcome_of(
            _with_options(module.evaluate, config, gpu).remote(run_id, split, which)
        )


def sample(
    config: TrainConfig, run_id: str, options: dict[str, Any], *, gpu: str | None
) -> dict[str, Any]:
    record = existing_run(config, run_id, "dit", "sample")
    breed = options.get("breed", "all")
    classes = expected_classes(record.get("config", {}).get("data", {}))
    if breed != "all" and classes and breed not in classes:
        raise ConfigError(f"unknown breed {breed!r}; choose one of {', '.join(classes)}, all")
    with deployed(config) as module:
        return calls.outcome_of(_with_options(module.sample, config, gpu).remote(run_id, options))


def existing_run(config: TrainConfig, run_id: str, task: str, command: str) -> dict[str, Any]:
    """The record of a run that must exist and be of `task`, read before any GPU starts."""
    record = check_run(config, run_id, task)
    if record is None:
        raise ConfigError(
            f"no run {run_id!r} on volume {config.modal.outputs_volume}; see `tinycats cloud "
            f"volume ls runs` ({command} needs a {task} run)"
        )
    return record


def expected_classes(data: dict[str, Any]) -> list[str]:
    """A run's class names from its saved data config ([] when they cannot be told)."""
    from tinycats.breeds import CAT_BREEDS, OTHER_CLASS

    if data.get("breeds"):
        return list(data["breeds"])
    if data.get("source") == "synthetic":
        from tinycats.data.synthetic import synthetic_class_names

        return synthetic_class_names(int(data.get("synthetic_classes", 0)))
    if data.get("source"):
        return [*CAT_BREEDS, *([OTHER_CLASS] if data.get("include_other") else [])]
    return []


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
