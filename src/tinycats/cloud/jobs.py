"""What each Modal function does once its container is up: plain Python over two Stores.

`modal_app.py` only wraps these in decorators and hands them `VolumeStore`s over the
mounted volumes; tests hand them `VolumeStore`s over `tests/fake_volume.py` mounts and
run the very same bodies. Modal is not imported here.

The volume discipline every body follows: `reload()` before reading what another
container may have committed, `commit()` after writing anything worth keeping (the
engine itself commits after every checkpoint and prune).

Retries and preemption (see docs/modal.md):
- A preempted container is restarted by Modal on the same input without using a retry;
  an exception uses one (with the backoff delay). Either way the next attempt gets the
  same run_id and continues from the last committed checkpoint.
- On SIGTERM/SIGINT (preemption) or when the attempt's time budget runs out, the engine
  checkpoints at the next step, commits, and `train_job` raises `AttemptStopped`, so
  the input is attempted again rather than reported done with an unfinished run.
- On Modal input cancellation (SIGUSR1 for sync functions) the run checkpoints and the
  call returns normally: the user asked it to stop, so it must not be retried.
"""

from __future__ import annotations

import io
import os
import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinycats.cloud.resources import with_data_dir
from tinycats.errors import ConfigError
from tinycats.storage import Store

CANCEL_SIGNAL = signal.SIGUSR1
"""Modal's input cancellation of a sync function arrives as SIGUSR1 (modal 1.6.4
`_container_entrypoint`); the guard takes it over from Modal's raising handler."""
CANCEL_REASON = CANCEL_SIGNAL.name
TIME_BUDGET_REASON = "attempt time budget"
GUARD_SIGNALS = (signal.SIGTERM, signal.SIGINT, CANCEL_SIGNAL)


class AttemptStopped(RuntimeError):
    """An attempt stopped early (preemption, time budget) after committing its checkpoint.

    Raised so Modal runs the input again; the next attempt resumes from that checkpoint.
    """


def close_data_handles() -> None:
    """The data volume's `close_handles`: unmap every shard this container has open."""
    from tinycats.data import close_open_shards

    close_open_shards()


def prepare_data_job(data: Store, config_dict: dict[str, Any]) -> dict[str, Any]:
    """Build the prepared dataset on the data volume once; later calls return at once."""
    from tinycats.config import validate_config
    from tinycats.data import prepare_dataset

    data.reload()
    config = validate_config(config_dict)
    existed = _prepared_exists(data.root, config)
    prepared = prepare_dataset(config.data, data.root, progress=False)
    if not existed:
        data.commit()
    files = sum(1 for p in prepared.rglob("*") if p.is_file())
    return {"prepared": prepared.name, "cached": existed, "files": files}


def _prepared_exists(data_root: Path, config: Any) -> bool:
    from tinycats.data.prepare import prepared_name
    from tinycats.data.shards import MANIFEST

    return (data_root / prepared_name(config.data) / MANIFEST).is_file()


@contextmanager
def attempt_timer(guard: Any, budget_seconds: float | None):
    """Ask the guard to stop once the attempt's time budget is spent (None: no budget)."""
    if budget_seconds is None:
        yield
        return
    timer = threading.Timer(budget_seconds, guard.request, args=(TIME_BUDGET_REASON,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def merge_layers(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, recursively (nested config sections merge key by key)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_layers(merged[key], value)
        else:
            merged[key] = value
    return merged


def train_job(
    data: Store,
    outputs: Store,
    task: str,
    config_layer: dict[str, Any],
    run_id: str,
    guard: Any,
    *,
    budget_seconds: float | None = None,
) -> dict[str, Any]:
    """One attempt of a run: resume `run_id` if it has a committed checkpoint, else start it.

    `config_layer` holds the caller's choices only (TOML file contents and --set
    overrides as a nested dict). They go on top of the run's saved config when the run
    exists, else on top of the defaults — the same layering as `tinycats train` — so a
    resumed run keeps its settings unless the caller changes one (e.g. optim.max_steps).
    """
    from tinycats.config import build_config
    from tinycats.train import plan_run, run_training

    if not run_id:
        raise ConfigError("a cloud run needs its run_id fixed by the caller before the first try")
    data.reload()
    outputs.reload()
    plan = plan_run(outputs, task, run_id, "auto")
    config = build_config(task, base=merge_layers(plan.saved_config or {}, config_layer))
    config = with_data_dir(config, data.root)
    prepare_data_job(data, config.to_dict())
    print(f"{plan.run_id}: {plan.reason} (attempt on {outputs.root})", flush=True)
    try:
        with attempt_timer(guard, budget_seconds):
            result = run_training(config, outputs, plan.run_id, guard=guard, progress=False)
    finally:
        # The final run record and any pretrained weights cached under TORCH_HOME.
        outputs.commit()
        data.commit()
    if result.status == "preempted" and guard.reason != CANCEL_REASON:
        raise AttemptStopped(
            f"run {result.run_id} stopped at step {result.step}/{result.max_steps} "
            f"({guard.reason}); checkpoint committed, the next attempt resumes from it"
        )
    return asdict(result)


def evaluate_job(
    outputs: Store, data: Store, run_id: str, *, split: str = "test", which: str = "best"
) -> dict[str, Any]:
    """Evaluate a classifier run's checkpoint; writes reports/<run_id>/ and commits."""
    from tinycats.train.evaluation import evaluate_classifier
    from tinycats.train.inference import load_trained_model

    outputs.reload()  # see the checkpoints the training container committed
    data.reload()
    trained = load_trained_model(outputs, run_id, which=which)
    if trained.config.task != "classifier":
        raise ConfigError(f"{run_id} is a {trained.config.task} run; eval needs a classifier")
    trained.config = with_data_dir(trained.config, data.root)
    report = evaluate_classifier(trained, outputs, split=split)
    data.commit()  # the split may have been prepared just now
    return report.to_dict()


def class_indices(classes: list[str], breed: str) -> list[int]:
    """Rows of the grid: every class for "all", else the one named."""
    if breed == "all":
        return list(range(len(classes)))
    if breed not in classes:
        raise ConfigError(f"unknown breed {breed!r}; choose one of {', '.join(classes)}, all")
    return [classes.index(breed)]


def sample_job(
    outputs: Store,
    run_id: str,
    *,
    breed: str = "all",
    n: int = 8,
    seed: int = 0,
    cfg_scale: float | None = None,
    steps: int | None = None,
    which: str = "best",
) -> dict[str, Any]:
    """Draw a labelled grid with a DiT run; saves it under samples/<run_id>/, commits, returns it."""
    from tinycats.storage.atomic import write_bytes_atomic
    from tinycats.train.inference import load_trained_model
    from tinycats.train.tasks import sample_grid

    outputs.reload()
    trained = load_trained_model(outputs, run_id, which=which)
    if trained.config.task != "dit":
        raise ConfigError(f"{run_id} is a {trained.config.task} run; sample needs a dit run")
    dit = trained.config.dit
    grid = sample_grid(
        trained.model,
        trained.classes,
        class_indices(trained.classes, breed),
        per_class=n,
        steps=steps or dit.sample_steps,
        cfg_scale=dit.cfg_scale if cfg_scale is None else cfg_scale,
        sampler=dit.sampler,
        seed=seed,
        device=trained.device,
    )
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    png = buffer.getvalue()
    relative = Path("samples") / run_id / f"grid_{breed}_step{trained.info.step}_seed{seed}.png"
    target = outputs.root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, png)
    outputs.commit()
    return {"path": relative.as_posix(), "png": png, "step": trained.info.step}


def cuda_warmup() -> dict[str, Any]:
    """Create the CUDA context and run one kernel, so the first training step is not the one
    paying for it (runs after a snapshot restore: GPU state is not in a CPU snapshot)."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False}
    x = torch.randn(256, 256, device="cuda")
    (x @ x).sum().item()
    torch.cuda.synchronize()
    return {"cuda": True, "gpu": torch.cuda.get_device_name(0), "pid": os.getpid()}
