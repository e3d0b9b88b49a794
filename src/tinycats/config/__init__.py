"""Validated, serialisable configs: the one source of defaults, and the task registry.

- tasks.py: the task registry (`TASKS`): defaults, model and trainer of each task.
- schema.py: every section of a run's `TrainConfig`, validated where it is defined.
- serve.py: the inference server's `ServeConfig` (not part of a run).
- int8.py: the int8 export's `Int8Config` (not part of a run).
- layers.py: files (`extends`), `--set` and named flags as raw layers, merged.
- loading.py: `build_config` / `resolve_config`: layers → a validated `TrainConfig`.
- paths.py: where the local Store lives by default.
"""

from tinycats.config.int8 import Int8Config, int8_config
from tinycats.config.layers import (
    apply_overrides,
    flatten,
    merge_layers,
    read_config_file,
    user_layer,
)
from tinycats.config.loading import build_config, layered_config, resolve_config, validate_config
from tinycats.config.paths import DEFAULT_OUT, OUT_ENV_VAR, default_out_dir
from tinycats.config.schema import (
    AugmentConfig,
    CheckpointConfig,
    ClassifierConfig,
    DataConfig,
    DiTConfig,
    ModalConfig,
    OptimConfig,
    RetentionConfig,
    RetryConfig,
    TrainConfig,
)
from tinycats.config.serve import SERVE_TOKEN_ENV, ServeConfig
from tinycats.config.tasks import TASKS, TaskSpec, task_spec

__all__ = [
    "DEFAULT_OUT",
    "OUT_ENV_VAR",
    "SERVE_TOKEN_ENV",
    "TASKS",
    "AugmentConfig",
    "CheckpointConfig",
    "ClassifierConfig",
    "DataConfig",
    "DiTConfig",
    "Int8Config",
    "ModalConfig",
    "OptimConfig",
    "RetentionConfig",
    "RetryConfig",
    "ServeConfig",
    "TaskSpec",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "default_out_dir",
    "flatten",
    "int8_config",
    "layered_config",
    "merge_layers",
    "read_config_file",
    "resolve_config",
    "task_spec",
    "user_layer",
    "validate_config",
]
