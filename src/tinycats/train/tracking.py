"""TensorBoard and MLflow, opt-in per run (`tracking.tensorboard`, `tracking.mlflow`).

Both are fed the metrics log's own lines (train/metrics.py), so they show what the log
holds, and both survive a SIGKILL and a resume with every step exactly once:

- TensorBoard writes under `<out>/tensorboard/<run_id>/` (on Modal: the outputs volume)
  just before each checkpoint's commit, with a writer opened and closed each time (a
  Modal commit is refused while a file is open). A resumed run's first writer purges
  every step after the resumed one (`SummaryWriter(purge_step=...)`), which
  TensorBoard's reader applies to the older event files.
- MLflow logs a line only once the checkpoint covering it is committed; the MLflow run
  id lives in the run record, so a resume or a Modal retry continues the same MLflow
  run, and on resume the lines it lacks up to the resumed step (say, a kill between a
  commit and its logging) are sent from the log. Its store is `MLFLOW_TRACKING_URI`, or
  a SQLite file under `<out>/mlflow/`. Preview grids go in as artifacts.

The libraries are the optional extra `tracking`; a run asking for one that is not
installed stops before training with the fix.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinycats.config import flatten
from tinycats.errors import ConfigError
from tinycats.storage import RunRegistry, Store

log = logging.getLogger(__name__)

SKIPPED_KEYS = {"step", "kind", "time", "steps"}
MLFLOW_EXPERIMENT = "tinycats"
MLFLOW_STATUS = {"completed": "FINISHED", "preempted": "KILLED", "failed": "FAILED"}
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def make_sinks(config: Any, store: Store, run_id: str) -> list[Any]:
    """The trackers `config.tracking` asks for (nothing is opened yet)."""
    require_trackers(config)
    sinks: list[Any] = []
    if config.tracking.tensorboard:
        sinks.append(TensorBoardSink(store.root / "tensorboard" / run_id))
    if config.tracking.mlflow:
        sinks.append(MlflowSink(config, store, run_id))
    return sinks


def require_trackers(config: Any) -> None:
    """A ConfigError naming the fix when a tracker is on and its library is not installed."""
    import importlib.util

    for key, module in (("tensorboard", "tensorboard"), ("mlflow", "mlflow")):
        if getattr(config.tracking, key) and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"tracking.{key} is on but {module} is not installed; pip install "
                f"'tinycats[tracking]' or --set tracking.{key}=false"
            )


def _scalars(line: dict[str, Any]) -> dict[str, float]:
    """`train/loss`, `eval/val_acc`, ...: a line's numbers under its kind."""
    return {
        f"{line['kind']}/{key}": float(value)
        for key, value in line.items()
        if key not in SKIPPED_KEYS and isinstance(value, int | float) and value is not None
    }


class TensorBoardSink:
    """Event files under `logdir`, written at each checkpoint, purged after a resumed step."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = Path(logdir)
        self.purge_step: int | None = None

    def resume(self, step: int, lines: Sequence[dict[str, Any]]) -> None:
        self.purge_step = step + 1  # the next writer hides anything logged after `step`

    def write(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if not lines and not images and self.purge_step is None:
            return
        writer = SummaryWriter(str(self.logdir), purge_step=self.purge_step)
        self.purge_step = None
        try:
            for line in lines:
                for tag, value in _scalars(line).items():
                    writer.add_scalar(tag, value, line["step"], walltime=line.get("time"))
            for tag, path in images.items():
                step = int(path.stem.rsplit("_", 1)[-1])
                writer.add_image(tag, _image_hwc(path), step, dataformats="HWC")
        finally:
            writer.close()

    def published(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        """Nothing: the event files went into the commit itself."""

    def close(self, status: str) -> None:
        """Nothing is held open between checkpoints."""


def log_evaluation(
    config: Any, store: Store, run_id: str, split: str, figures: dict[str, float], image: Path
) -> None:
    """`tinycats eval`'s figures and confusion matrix into the run's trackers, at the step of
    the checkpoint evaluated (`figures["step"]`); nothing when the run tracks nothing."""
    step = int(figures["step"])
    scalars = {f"{split}/{k}": float(v) for k, v in figures.items() if k != "step"}
    if config.tracking.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(store.root / "tensorboard" / run_id)) as writer:
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, step)
            writer.add_image(f"{split}/confusion", _image_hwc(image), step, dataformats="HWC")
    if config.tracking.mlflow:
        sink = MlflowSink(config, store, run_id)
        sink.connect()
        mlflow_run = RunRegistry(store).get(run_id).get("mlflow_run_id")
        if mlflow_run is not None:  # the run has logged to MLflow: add to that run
            for tag, value in scalars.items():
                sink.client.log_metric(mlflow_run, tag, value, step=step)
            sink.client.log_artifact(mlflow_run, str(image), f"eval/{split}")


def _image_hwc(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


class MlflowSink:
    """One MLflow run per tinycats run, continued across resumes and retries."""

    def __init__(self, config: Any, store: Store, run_id: str) -> None:
        self.config, self.store, self.run_id = config, store, run_id
        self.client: Any = None
        self.mlflow_run: str | None = None
        self.unsent: list[dict[str, Any]] = []

    def connect(self) -> None:
        from mlflow import MlflowClient

        folder = self.store.root / "mlflow"
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
        else:
            artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else folder / "artifacts"
            self.experiment_id = self.client.create_experiment(
                MLFLOW_EXPERIMENT, artifact_location=artifacts and artifacts.resolve().as_uri()
            )

    def resume(self, step: int, lines: Sequence[dict[str, Any]]) -> None:
        """Find (or start) the MLflow run, then send the log's lines it lacks up to `step`."""
        from mlflow.entities import Param

        self.connect()
        registry = RunRegistry(self.store)
        self.mlflow_run = registry.get(self.run_id).get("mlflow_run_id")
        if self.mlflow_run is None:
            run = self.client.create_run(
                self.experiment_id, run_name=self.run_id, tags={"tinycats.run_id": self.run_id}
            )
            self.mlflow_run = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(self.config.to_dict()).items()]
            for chunk in range(0, len(params), 100):
                self.client.log_batch(self.mlflow_run, params=params[chunk : chunk + 100])
            registry.update(self.run_id, mlflow_run_id=self.mlflow_run)
        else:
            self.client.update_run(self.mlflow_run, status="RUNNING")
        have: dict[str, set[int]] = {}
        for line in lines:
            for key in _scalars(line):
                if key not in have:
                    history = self.client.get_metric_history(self.mlflow_run, key)
                    have[key] = {m.step for m in history}
        self._send(lines, have)

    def write(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        """Nothing yet: a line goes to MLflow once its checkpoint is committed."""

    def published(self, lines: Sequence[dict[str, Any]], images: dict[str, Path]) -> None:
        """Send the lines (and any lines a failure held back) and the preview grids."""
        try:
            self._send([*self.unsent, *lines])
            self.unsent = []
            for tag, path in images.items():
                self.client.log_artifact(self.mlflow_run, str(path), tag)
        except Exception as err:  # a tracker outage must not stop training; retried next time
            self.unsent = [*self.unsent, *lines]
            log.warning("mlflow: could not log %d lines (%s); retrying later", len(lines), err)

    def _send(self, lines: Sequence[dict[str, Any]], have: dict | None = None) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(key, value, int(1000 * line.get("time", time.time())), line["step"])
            for line in lines
            for key, value in _scalars(line).items()
            if have is None or line["step"] not in have.get(key, ())
        ]
        for chunk in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.mlflow_run, metrics=metrics[chunk : chunk + MLFLOW_BATCH])

    def close(self, status: str) -> None:
        if self.client is not None and self.mlflow_run is not None:
            self.client.set_terminated(self.mlflow_run, MLFLOW_STATUS.get(status, "FINISHED"))
