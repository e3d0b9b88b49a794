"""tinycats on Modal: the same training code, on GPUs, with volumes, retries and snapshots.

Read top to bottom, this file is the whole cloud story (after modal-examples'
long-training.py):

1. an image whose dependency layers are a lock file installed by a pinned uv, so they
   never change under you and never rebuild on a code edit;
2. two volumes: `data` (prepared shards, pretrained weights via TORCH_HOME) and
   `outputs` (the Store root: checkpoints, runs, reports, samples);
3. `prepare_data`: builds the dataset cache on the data volume, on CPUs only;
4. `Trainer`: a GPU class whose container imports torch once into a memory snapshot,
   warms CUDA after restore, and trains one slice of a run: it resumes from the last
   committed checkpoint and, when its time is up, spawns its own continuation;
   `ClusterTrainer` (when `modal.nodes` > 1) does the same on a cluster of containers;
5. `evaluate` and `sample`: reload the outputs volume, read the run, write, commit;
6. `main`: a local entrypoint, so `modal run -m tinycats.cloud.modal_app` trains too.

What the App is built with (volume names, the GPU or GPU fallback list, snapshots)
comes from the config through `resources.py`; per-call settings (GPU, slice length,
retries) travel with each call and, for a run's later calls, come from its record.
The bodies are `jobs.py` and `training.py`, tested locally against a fake volume.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import modal

from tinycats.cloud import jobs
from tinycats.cloud import resources as res
from tinycats.gpus import modal_gpu_argument

MODAL_CONFIG, RETRY_CONFIG = res.settings_from_env()
SETTINGS_ENV = res.settings_env(MODAL_CONFIG, RETRY_CONFIG)

app = modal.App(MODAL_CONFIG.app_name)

# -- 1. the image: locked dependencies first (cached), our code last (an edit rebuilds nothing) -

image = (
    modal.Image.debian_slim(python_version=res.PYTHON_VERSION)
    .uv_pip_install(
        requirements=[str(res.LOCK_FILE)],
        uv_version=res.UV_VERSION,
        extra_options="--no-deps",  # the lock is complete: install exactly it
    )
    .env(res.image_env())
    .add_local_python_source("tinycats")
)

# -- 2. the volumes ---------------------------------------------------------------------------


def _volume(name: str) -> modal.Volume:
    return modal.Volume.from_name(name, create_if_missing=True, version=MODAL_CONFIG.volume_version)


data_volume = _volume(MODAL_CONFIG.data_volume)
outputs_volume = _volume(MODAL_CONFIG.outputs_volume)
volumes = {res.DATA_MOUNT: data_volume, res.OUTPUTS_MOUNT: outputs_volume}
leases = modal.Dict.from_name(res.leases_dict_name(MODAL_CONFIG), create_if_missing=True)
"""One writer per run: a volume cannot arbitrate between containers, a Dict can (lease.py)."""

retries = modal.Retries(**res.retry_kwargs(RETRY_CONFIG))
common = {
    "image": image,
    "volumes": volumes,
    "env": SETTINGS_ENV,  # the container rebuilds this same App (same volume names)
    "timeout": res.timeout_seconds(MODAL_CONFIG),
    "scaledown_window": MODAL_CONFIG.scaledown_window_s,  # an idle GPU is billed until then
}


def stores() -> tuple[Any, Any]:
    """(data, outputs) Stores over the mounted volumes. Commits and reloads retry while files
    are open; on the data volume the open files are the memory-mapped shards, which
    `close_data_handles` unmaps (they reopen on the next read)."""
    from tinycats.storage import VolumeStore

    return (
        VolumeStore(data_volume, Path(res.DATA_MOUNT), close_handles=jobs.close_data_handles),
        VolumeStore(outputs_volume, Path(res.OUTPUTS_MOUNT)),
    )


# -- 3. the dataset cache, on CPUs ------------------------------------------------------------

cpu_function_options = {
    **common,
    "retries": retries,
    "cpu": res.PREPARE_CPU,
    "memory": res.PREPARE_MEMORY_MB,
    "timeout": res.PREPARE_TIMEOUT_S,  # a first Oxford download and decode
}
gpu_options = {
    **common,
    "gpu": modal_gpu_argument(MODAL_CONFIG.gpu),  # a list is Modal's fallback order
    "cpu": MODAL_CONFIG.cpu,
    "memory": MODAL_CONFIG.memory_mb,
}
gpu_function_options = {**gpu_options, "retries": retries}
trainer_options = {**gpu_function_options, "enable_memory_snapshot": MODAL_CONFIG.memory_snapshot}
baseline_options = {**gpu_options, "enable_memory_snapshot": False}


@app.function(**cpu_function_options)
def prepare_data(config: dict[str, Any]) -> dict[str, Any]:
    """Prepare the dataset on the data volume (a cache hit returns at once); no GPU is billed."""
    data, _ = stores()
    return jobs.prepare_data_job(data, config)


# -- 4. training --------------------------------------------------------------------------------


def import_heavy_modules() -> float:
    """Import torch & co (most of a cold start); returns the seconds it took."""
    started = time.perf_counter()
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import tinycats.models
    import tinycats.train
    import tinycats.train.evaluation  # noqa: F401

    return time.perf_counter() - started


def spawn_continuation(trainer: Any, task: str, run_id: str, config: Any) -> str:
    """Start the run's next slice as a new call of `trainer` (the class of this call), with
    the run's own per-call settings."""
    options = res.call_options(config)
    options["retries"] = modal.Retries(**options["retries"])
    call = trainer.with_options(**options)().train.spawn(task, {}, run_id)
    return call.object_id


def train_in_container(
    trainer: Any, cuda: dict[str, Any], task: str, config: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """The body of a trainer's `train`: one slice of run `run_id` (see training.py for how
    it ends) in this container, or in this container of a cluster (cluster.py).

    `config` is the caller's layer (file + --set), applied over the run's saved config.
    """
    started = time.monotonic()  # Modal's timeout counts from the input's start
    from tinycats.cloud.lease import RunLease
    from tinycats.cloud.training import train_call
    from tinycats.train import PreemptionGuard

    data, outputs = stores()
    call_id = modal.current_function_call_id()
    nproc = cuda.get("gpus", 1)  # H100:4: four ranks, NCCL (cloud/ranks.py)
    nodes = None
    if trainer is not Trainer:  # a cluster's container: node `rank` of `count`
        from tinycats.cloud.cluster import follow_call, this_node

        nodes = this_node()
    with PreemptionGuard(signals=jobs.GUARD_SIGNALS) as guard:
        if nodes is not None and nodes.rank > 0:
            result = follow_call(data, outputs, task, config, run_id, guard, nodes, nproc)
        else:
            result = train_call(
                data,
                outputs,
                task,
                config,
                run_id,
                guard,
                started=started,
                continue_run=lambda cfg: spawn_continuation(trainer, task, run_id, cfg),
                call_id=call_id,
                gpu=cuda.get("gpu_type"),
                require_gpu=jobs.require_cuda,
                lease=lambda run: RunLease(leases, run, call_id),
                nproc=nproc,
                nodes=nodes,
            )
    if result.get("status") == "cancelled":  # the runtime records a TERMINATED input
        raise modal.exception.InputCancellation(
            f"run {run_id} cancelled at step {result['step']}; its checkpoint is committed"
        )
    return result


class TrainerBody:
    """Methods shared by the snapshot and no-snapshot variants (see bench); each variant
    declares its own import hook, because Modal refuses `snap=True` hooks (even inherited
    ones) on a class without snapshots."""

    @modal.enter(snap=False)
    def warm_cuda(self) -> None:
        """Runs in every container after restore: a CPU snapshot holds no GPU state."""
        started = time.perf_counter()
        self.cuda = jobs.cuda_warmup()
        self.warmup_seconds = time.perf_counter() - started

    @modal.method()
    def train(self, task: str, config: dict[str, Any], run_id: str) -> dict[str, Any]:
        """One slice of run `run_id` in this container (train_in_container)."""
        return train_in_container(Trainer, self.cuda, task, config, run_id)

    @modal.method()
    def ping(self) -> dict[str, Any]:
        """What `tinycats cloud bench` times: an empty call, plus this container's start-up."""
        return {
            "import_seconds": self.import_seconds,
            "warmup_seconds": self.warmup_seconds,
            **self.cuda,
        }


@app.cls(**trainer_options)
class Trainer(TrainerBody):
    """The training class; GPU, timeout and retries per call via `Trainer.with_options`."""

    @modal.enter(snap=MODAL_CONFIG.memory_snapshot)
    def import_heavy(self) -> None:
        """With a snapshot this runs once, before it is taken; restored containers skip it."""
        self.import_seconds = import_heavy_modules()


@app.cls(**baseline_options)
class TrainerNoSnapshot(TrainerBody):
    """The same class without a memory snapshot: the bench's cold-start baseline."""

    @modal.enter()
    def import_heavy(self) -> None:
        self.import_seconds = import_heavy_modules()


ClusterTrainer: Any = None
"""Defined only when `modal.nodes` > 1: a cluster's size is fixed when the App is built."""
if MODAL_CONFIG.nodes > 1:

    @app.cls(**gpu_function_options)
    @modal.clustered(size=MODAL_CONFIG.nodes, rdma=MODAL_CONFIG.rdma)
    class ClusterTrainer:
        """`modal.nodes` containers, each with every GPU of its host, training one run
        (cluster.py). A clustered class may expose one method; no memory snapshot."""

        @modal.enter()
        def start(self) -> None:
            self.import_seconds = import_heavy_modules()
            self.cuda = jobs.cuda_warmup()

        @modal.method()
        def train(self, task: str, config: dict[str, Any], run_id: str) -> dict[str, Any]:
            """One slice of run `run_id` on every container of the cluster."""
            return train_in_container(ClusterTrainer, self.cuda, task, config, run_id)


def trainer_class(nodes: int) -> Any:
    """The class that trains on `nodes` containers; a cluster's size is the App's own."""
    if nodes > 1 and nodes != MODAL_CONFIG.nodes:
        from tinycats.errors import ConfigError

        raise ConfigError(
            f"this App was built for modal.nodes={MODAL_CONFIG.nodes}, not {nodes}; launch "
            "with `tinycats cloud train ... --nodes N`, which builds the App to match"
        )
    return ClusterTrainer if nodes > 1 else Trainer


# -- 5. evaluation and sampling -------------------------------------------------------------------


@app.function(**gpu_function_options)
def evaluate(run_id: str, split: str = "test", which: str = "best") -> dict[str, Any]:
    """Evaluate a classifier run on the data volume; the report lands in reports/<run_id>/."""
    data, outputs = stores()
    return jobs.evaluate_job(outputs, data, run_id, split=split, which=which)


@app.function(**gpu_function_options)
def sample(run_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """Draw a grid with a DiT run; saved under samples/<run_id>/ and returned as PNG bytes."""
    _, outputs = stores()
    return jobs.sample_job(outputs, run_id, **options)


# -- 6. `modal run` -------------------------------------------------------------------------------


@app.local_entrypoint()
def main(
    task: str = "classifier",
    config: str = "",
    run_id: str = "",
    max_steps: int = 0,
    gpu: str = "",
) -> None:
    """`modal run -m tinycats.cloud.modal_app --task dit --max-steps 500`: one training run,
    followed across its slices, as `tinycats cloud train` does (see docs/modal.md)."""
    from tinycats.cloud.client import local_entrypoint_train

    print(local_entrypoint_train(trainer_class, task, config, run_id, max_steps, gpu))
