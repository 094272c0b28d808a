"""Frozen dataclass run configs loaded from YAML with ``key=value`` overrides."""

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import (
    CheckpointConfig,
    DataSection,
    DataSource,
    EvalConfig,
    MeshConfig,
    MethodConfig,
    ModelSpec,
    OptimizerConfig,
    RunConfig,
    TrainConfig,
    load_run_config,
)

__all__ = [
    "CheckpointConfig", "ConfigError", "DataSection", "DataSource", "EvalConfig", "MeshConfig",
    "MethodConfig", "ModelSpec", "OptimizerConfig", "RunConfig", "TrainConfig", "load_run_config",
]
