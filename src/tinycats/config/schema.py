"""The config schema: every section of a run's `TrainConfig`, with its defaults and bounds.

Each value is validated where it is defined, so a bad value fails before any work
starts, with a one-line `ConfigError` (see loading.py) naming the key, the value and
what is allowed. The task's own defaults live in the task registry (tasks.py).
"""

from __future__ import annotations

from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tinycats.breeds import CAT_BREEDS, OTHER_CLASS
from tinycats.config.tasks import TASKS
from tinycats.gpus import parse_gpu_spec, whole_host


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments re-validate."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class AugmentConfig(Section):
    """Train-time augmentation, applied to uint8 tensors (see tinycats.data)."""

    crop_scale_min: float = Field(0.35, gt=0.0, le=1.0, description="RandomResizedCrop min area")
    hflip: bool = True
    color_jitter: float = Field(0.1, ge=0.0, le=1.0, description="brightness/contrast/saturation")
    trivial_augment: bool = Field(False, description="one random op per image (TrivialAugment)")
    erase_prob: float = Field(0.0, ge=0.0, le=1.0, description="random erasing probability")


class DataConfig(Section):
    """Which images, at which resolution, split how."""

    source: str = Field(
        "synthetic", description="'synthetic', 'oxford' (download), or a folder in Oxford layout"
    )
    dir: str = Field("", description="where prepared shards live; empty = <out>/data")
    image_size: int = Field(64, ge=16, le=1024, description="train/eval resolution (pixels)")
    progressive_min_size: int = Field(
        0,
        ge=0,
        le=1024,
        description="classifier: training starts at this size and grows to image_size; 0 = off",
    )
    progressive_ramp: tuple[float, float] = Field(
        (0.25, 0.75),
        description="fractions of the run between which the training size grows",
    )
    stored_scale: float = Field(
        1.125, ge=1.0, le=2.0, description="shards store the shorter side at this × image_size"
    )
    include_other: bool = Field(False, description="add a 13th class 'other' from the dog images")
    breeds: list[str] = Field(default_factory=list, description="subset of breeds; empty = all")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="carved from trainval, stratified")
    synthetic_classes: int = Field(4, ge=2, le=64)
    synthetic_per_class: int = Field(
        96, ge=4, le=100_000, description="trainval images per class (val carved from it)"
    )
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="seed of the prepared data (synthetic images, val carve)"
    )
    num_workers: int = Field(0, ge=0, le=64)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("breeds")
    @classmethod
    def _known_breeds(cls, breeds: list[str]) -> list[str]:
        allowed = (*CAT_BREEDS, OTHER_CLASS)
        unknown = [b for b in breeds if b not in allowed]
        if unknown:
            raise ValueError(f"unknown breed {unknown[0]!r}; choose from {', '.join(allowed)}")
        if len(set(breeds)) != len(breeds):
            raise ValueError("breeds are listed twice")
        return breeds

    @model_validator(mode="after")
    def _progressive_resizing(self) -> DataConfig:
        if self.progressive_min_size and self.progressive_min_size >= self.image_size:
            raise ValueError(
                f"progressive_min_size={self.progressive_min_size} must be below "
                f"image_size={self.image_size} (or 0 to train at one size)"
            )
        start, end = self.progressive_ramp
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(
                f"progressive_ramp={list(self.progressive_ramp)} must be two fractions "
                "0 <= start <= end <= 1"
            )
        return self

    @property
    def stored_size(self) -> int:
        """Shorter side of the images kept in the shards (room for random crops)."""
        return round(self.image_size * self.stored_scale)


class ClassifierConfig(Section):
    """The breed classifier: a torchvision ResNet with a fresh head."""

    arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    pretrained: str = Field(
        "", description="'' (from scratch), 'imagenet', or a .pth/.safetensors path"
    )
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    mixup_alpha: float = Field(0.0, ge=0.0, le=10.0, description="Beta(a, a) mixing; 0 = off")
    cutmix_alpha: float = Field(
        0.0, ge=0.0, le=10.0, description="Beta(a, a) box pasting; 0 = off (both on: one per batch)"
    )
    tta_hflip: bool = Field(
        False, description="eval/predict average the logits of each image and its mirror"
    )
    eval_image_size: int = Field(
        0,
        ge=0,
        le=4096,
        description="validate/eval/predict/export at this size; 0 = data.image_size",
    )
    eval_crop: float = Field(
        1.0,
        ge=0.5,
        le=1.0,
        description="validate/eval/predict on the central fraction of each photo; 1 = all",
    )


class DiTConfig(Section):
    """The class-conditional Diffusion Transformer and its flow-matching objective.

    `preset` picks the architecture; any of patch_size..heads set to a non-zero value
    overrides the preset's value. The resolution is data.image_size (the token count
    follows); each preset's design resolution is in tinycats.models.dit.PRESETS.
    """

    preset: Literal["test", "small", "tiny"] = "test"
    patch_size: int = Field(0, ge=0, le=64, description="0 = from preset")
    width: int = Field(0, ge=0, le=4096, description="0 = from preset")
    depth: int = Field(0, ge=0, le=64, description="0 = from preset")
    heads: int = Field(0, ge=0, le=64, description="0 = from preset")
    prediction: Literal["x", "v"] = Field(
        "x",
        description="network output: x = the clean image (JiT), v = the velocity; the loss "
        "is on the velocity either way. A resumed run keeps the one it started with",
    )
    noise_scale: float = Field(
        1.0,
        gt=0.0,
        le=10.0,
        description="std of the noise at t=0 (JiT: 1.0 at 256 px, 2.0 at 512 px)",
    )
    class_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="label dropout for CFG")
    time_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_normal_mean: float = Field(
        -0.8,
        ge=-3.0,
        le=3.0,
        description="t = sigmoid(N(mean, std)); JiT's -0.8 leans to the noisy end, SD3's is 0",
    )
    logit_normal_std: float = Field(
        0.8, gt=0.0, le=3.0, description="spread of logit-normal t (JiT 0.8, SD3 1.0)"
    )
    sample_steps: int = Field(50, ge=1, le=1000)
    sampler: Literal["euler", "heun"] = "euler"
    cfg_scale: float = Field(3.0, ge=0.0, le=50.0)
    preview_per_class: int = Field(
        4, ge=0, le=64, description="samples per class in the grid written at each checkpoint"
    )


class OptimConfig(Section):
    """Optimisation and the training loop's length."""

    batch_size: int = Field(32, ge=1, le=65536)
    max_steps: int = Field(200, ge=1, description="optimizer steps in the whole run")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="sgd = SGD with Nesterov momentum beta1"
    )
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.05, ge=0.0, le=10.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="AdamW's beta1, or SGD's momentum")
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    warmup_steps: int = Field(10, ge=0, description="linear warm-up (capped at max_steps)")
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")
    grad_accum: int = Field(1, ge=1, le=1024)
    clip_grad: float = Field(1.0, ge=0.0, description="max grad norm; 0 disables")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="auto = bf16 on CUDA if supported else fp16, fp32 on CPU; bf16 also on CPU",
    )
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="0 disables EMA")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps; 0 = at checkpoints")


class CheckpointConfig(Section):
    """When checkpoints are written and what counts as 'best'."""

    every_steps: int = Field(50, ge=1, description="also always at the end and on preemption")
    async_save: bool = Field(True, description="write off the training thread")
    best_metric: str = Field("val_acc", min_length=1)
    best_mode: Literal["min", "max"] = "max"


class RetentionConfig(Section):
    """Which checkpoints survive pruning: the union of these rules (see storage.retention)."""

    keep_last: int = Field(5, ge=1, description="the newest N (at least 1)")
    keep_best: int = Field(1, ge=0, description="the best k by checkpoint.best_metric")
    keep_every: int = Field(0, ge=0, description="every K-th step; 0 = off")


class TrackingConfig(Section):
    """What a run records beside its checkpoints: the metrics log (storage/metrics_log.py),
    and optionally the same lines in TensorBoard and MLflow (train/tracking.py; the
    `tracking` extra)."""

    log_every: int = Field(
        10, ge=1, description="a metrics-log line every N steps (and at the last step)"
    )
    tensorboard: bool = Field(
        False, description="also write TensorBoard events under <out>/tensorboard/<run_id>"
    )
    mlflow: bool = Field(
        False, description="also log to MLflow: $MLFLOW_TRACKING_URI, else <out>/mlflow"
    )


class RetryConfig(Section):
    """Retry policy for cloud calls; bounds are the Modal client's own (modal.Retries)."""

    max_retries: int = Field(3, ge=0, le=10)
    backoff_coefficient: float = Field(2.0, ge=1.0, le=10.0)
    initial_delay: float = Field(10.0, ge=0.0, le=60.0, description="seconds, 0–60")
    max_delay: float = Field(60.0, ge=1.0, le=60.0, description="seconds, 1–60 (Modal's cap)")


class ModalConfig(Section):
    """Cloud resources for `tinycats cloud ...` (modal 1.6.4's own bounds)."""

    app_name: str = "tinycats"
    gpu: str = Field(
        "T4", description="T4, H100:4 (four in one container), or a fallback list H100,A100-80GB"
    )
    timeout_minutes: int = Field(
        60, ge=1, le=24 * 60, description="one call's slice; a longer run continues in a new call"
    )
    cpu: float = Field(4.0, gt=0.0, le=64.0)
    memory_mb: int = Field(16384, ge=512, le=344064)
    scaledown_window_s: int = Field(
        30, ge=2, le=3600, description="seconds an idle container is kept (and billed) for reuse"
    )
    preemption_grace_s: float = Field(
        30.0, gt=0.0, le=300.0, description="Modal's grace from SIGINT to SIGKILL on preemption"
    )
    data_volume: str = "tinycats-data"
    outputs_volume: str = "tinycats-outputs"
    volume_version: Literal[1, 2] = 1
    memory_snapshot: bool = True
    nodes: int = Field(
        1,
        ge=1,
        le=64,
        description="containers (hosts) training one run together (a Modal cluster); "
        "more than 1 needs every GPU of a host, e.g. H100:8",
    )
    rdma: bool = Field(True, description="RDMA between a cluster's containers (nodes > 1)")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, gpu: str) -> str:
        return ",".join(str(request) for request in parse_gpu_spec(gpu))

    @model_validator(mode="after")
    def _cluster_takes_whole_hosts(self) -> ModalConfig:
        if self.nodes > 1 and not whole_host(self.gpu):
            raise ValueError(
                f"modal.nodes={self.nodes} runs a Modal cluster, whose containers each take "
                f"every GPU of a host; set modal.gpu to one type with all of them, e.g. "
                f"H100:8 (not {self.gpu})"
            )
        return self


class TrainConfig(Section):
    """Everything a training run needs; saved, resolved, with the run."""

    task: str = Field("classifier", description="a name in tinycats.config.TASKS")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    data: DataConfig = Field(default_factory=DataConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    dit: DiTConfig = Field(default_factory=DiTConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    modal: ModalConfig = Field(default_factory=ModalConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        return task

    @model_validator(mode="after")
    def _progressive_needs_classifier(self) -> TrainConfig:
        if self.data.progressive_min_size and self.task != "classifier":
            raise ValueError(
                f"data.progressive_min_size applies to the classifier only; the {self.task} "
                "is built for one resolution (set it to 0)"
            )
        return self

    @property
    def eval_image_size(self) -> int:
        """The resolution a classifier is judged at. Random-resized-crop training shows
        objects larger than a whole-image view does, so testing ~1.2-1.3x above the
        training size often scores better (Touvron et al., FixRes, 2019)."""
        if self.task == "classifier" and self.classifier.eval_image_size:
            return self.classifier.eval_image_size
        return self.data.image_size

    @property
    def eval_crop(self) -> float:
        """The central fraction of each photo a classifier is judged on (1.0 for other tasks)."""
        return self.classifier.eval_crop if self.task == "classifier" else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-serialisable dict of every resolved value."""
        return self.model_dump(mode="json")

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())
