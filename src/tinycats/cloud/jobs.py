"""What each Modal function does once its container is up: plain Python over two Stores.

`modal_app.py` only wraps these in decorators and hands them `VolumeStore`s over the
mounted volumes; tests hand them `VolumeStore`s over `tests/fake_volume.py` mounts and
run the very same bodies. Modal is not imported here.

The volume discipline every body follows: `reload()` before reading what another
container may have committed, `commit()` after writing anything worth keeping (the
engine itself commits after every checkpoint and prune).

Training itself is `training.py` (how a call ends is most of its story). A problem
the user must fix is returned as a value (`returns_user_errors`), never raised to be
retried with backoff on a GPU.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinycats.cloud.pricing import gpu_type_of_device
from tinycats.cloud.resources import with_data_dir
from tinycats.errors import ConfigError, DataError, StorageError, TinycatsError
from tinycats.storage import Store

GUARD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
"""What the training guard takes over: SIGINT is Modal's preemption (a grace period, then
SIGKILL), SIGTERM a generic stop, SIGUSR1 the user's cancellation of a sync function's
input (modal 1.6.4 `_container_entrypoint.call_function`, whose own handler would raise
InputCancellation in the middle of a step)."""


def user_error(err: TinycatsError) -> dict[str, Any]:
    """A deterministic problem as a value: the client prints it as one line, exit 2."""
    return {"status": "error", "error": str(err), "error_type": type(err).__name__}


def returns_user_errors(body: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run `body`; return its TinycatsErrors as values. StorageError is raised: a volume that
    stays busy is transient and worth a retry."""

    def wrapped(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return body(*args, **kwargs)
        except StorageError:
            raise
        except TinycatsError as err:
            return user_error(err)

    wrapped.__name__, wrapped.__doc__ = body.__name__, body.__doc__
    return wrapped


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


def require_prepared(data: Store, config: Any) -> None:
    """A GPU never prepares data: the client runs `prepare_data` (CPUs only) before it
    launches a training call, so a missing dataset here is a user error with the fix."""
    from tinycats.data.prepare import prepared_name

    if not _prepared_exists(data.root, config):
        raise DataError(
            f"dataset {prepared_name(config.data)} is not prepared on the data volume; run "
            "`tinycats cloud prepare` with the same --config/--set (it runs on CPUs)"
        )


def _prepared_exists(data_root: Path, config: Any) -> bool:
    from tinycats.data.prepare import prepared_name
    from tinycats.data.shards import MANIFEST

    return (data_root / prepared_name(config.data) / MANIFEST).is_file()


@returns_user_errors
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


@returns_user_errors
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
    from tinycats.train.dit_task import sample_grid
    from tinycats.train.inference import load_trained_model

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
    name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
    kind = gpu_type_of_device(name)
    return {
        "cuda": True,
        "gpu": name,
        "gpu_type": None if kind is None else f"{kind}:{count}" if count > 1 else kind,
        "gpus": count,  # one training rank each (cloud/ranks.py)
        "pid": os.getpid(),
    }


class GpuUnavailable(RuntimeError):
    """A function that was given a GPU sees none: training on its CPU would bill a GPU for
    nothing. Raised (not returned) so Modal retries the input on another container."""


def require_cuda() -> None:
    """Stop at once, with the versions that explain why, when torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    raise GpuUnavailable(
        f"this function was given a GPU but torch {torch.__version__} (built for CUDA "
        f"{torch.version.cuda or 'none: a CPU-only wheel'}) sees no CUDA device; stopping "
        "before any training is billed as GPU time. Check the image's torch wheel and the "
        "driver (nvidia-smi in `modal shell`)"
    )
