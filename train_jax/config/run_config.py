"""The run config: one frozen dataclass per concern, composed into `RunConfig`.

A YAML file in `configs/train/` maps 1:1 onto `RunConfig`; `load_run_config(path, overrides)`
reads it, applies ``key=value`` overrides and validates everything (unknown or ill-typed keys
raise `ConfigError` naming the key). The shorthand override ``model=HF_DIR_OR_ID`` sets
``model.path`` and drops any random-init ``model.architecture``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from train_jax.config.loading import (
    ConfigError,
    apply_override,
    build,
    parse_override,
    read_yaml,
    to_plain,
)
from train_jax.data.config import DataConfig
from train_jax.distributed import DistributedConfig
from train_jax.model.config import LoraSpec, RematPolicy
from train_jax.model.kernels.names import KernelSetting
from train_jax.train.host_memory import HostAllocator

DType = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to start from and its numerics.

    `path` is a HF model folder, a hub id or a jaxtune checkpoint directory (`jaxtune model
    import` output or a previous run's `checkpoints/`). Without `path`, a model is randomly
    initialised from `architecture` (a HF `config.json` mapping) and `tokenizer` (a folder).
    `kernels` picks how attention and the other hand-tuned ops run (`auto`: by platform; see
    `train_jax.model.kernels`); `remat` what each decoder block keeps for the backward pass.
    """

    path: str | None = None
    architecture: Mapping[str, Any] | None = None
    tokenizer: str | None = None
    dtype: DType = "float32"  # compute dtype (bfloat16: bf16 matmuls on fp32 master weights)
    param_dtype: DType = "float32"
    kernels: KernelSetting = "auto"  # auto | reference | xla_cpu | tpu | gpu
    remat: RematPolicy = "none"  # none | full | save_dots | save_qkvo
    # One lax.scan over the decoder blocks instead of unrolled calls: the compiler keeps one
    # block's gathered weights and temporaries alive at a time (see docs/TRAINING.md).
    scan_layers: bool = False

    def __post_init__(self) -> None:
        if (self.path is None) == (self.architecture is None):
            raise ConfigError("model: set exactly one of model.path (pretrained) and "
                              "model.architecture (random init)")
        if self.architecture is not None and self.tokenizer is None:
            raise ConfigError("model: a random-init model (model.architecture) needs "
                              "model.tokenizer")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh axis sizes; one axis may be -1 (all remaining devices)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        bad = [f"mesh.{k}={v}" for k, v in sizes.items() if v == 0 or v < -1]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: mesh sizes must be >= 1 or -1 (the rest)")
        if list(sizes.values()).count(-1) > 1:
            raise ConfigError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with warm-up then a constant, linear, cosine or warmup-stable-decay (`wsd`)
    schedule, and gradient clipping.

    `wsd` holds the peak rate after warm-up and decays over the last `decay_fraction` of the
    run with `decay_shape`; its rate before the decay does not depend on the run's length, which
    is what lets a time budget fix that length after timing the first steps (docs/TRAINING.md,
    "Learning-rate schedule and the time budget").
    """

    learning_rate: float = 1e-4
    schedule: Literal["constant", "linear", "cosine", "wsd"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # final lr / peak lr for linear, cosine and wsd decay
    decay_fraction: float = 0.2  # wsd: the share of all steps spent decaying (0, 1]
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"  # wsd: how it decays
    weight_decay: float = 0.0  # never applied to norms and biases
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0  # global-norm clipping; null disables

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ConfigError(f"optimizer.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optimizer.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optimizer.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"optimizer.decay_fraction must be in (0, 1] (the share of the steps "
                              f"that decay), got {self.decay_fraction}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ConfigError(f"optimizer.clip_norm must be > 0 or null, got {self.clip_norm}")


@dataclass(frozen=True)
class MethodConfig:
    """What is trained: everything, LoRA adapters only, or the top blocks and the head."""

    name: Literal["full", "lora", "freeze"] = "full"
    lora: LoraSpec = field(default_factory=LoraSpec)  # used when name == "lora"
    unfrozen_blocks: int = 1  # used when name == "freeze": top N blocks (+ final norm, head)

    def __post_init__(self) -> None:
        if self.unfrozen_blocks < 0:
            raise ConfigError(f"method.unfrozen_blocks must be >= 0, got {self.unfrozen_blocks}")


@dataclass(frozen=True)
class DpoConfig:
    """Direct preference optimisation (Rafailov et al. 2023) on (prompt, chosen, rejected) rows."""

    beta: float = 0.1  # strength of the implicit KL to the reference model
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    label_smoothing: float = 0.0  # conservative DPO: assumed rate of flipped preferences

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"objective.dpo.beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError("objective.dpo.label_smoothing must be in [0, 0.5), got "
                              f"{self.label_smoothing}")


@dataclass(frozen=True)
class GrpoConfig:
    """Group relative policy optimisation (Shao et al. 2024) with a task's verifiable reward."""

    group_size: int = 4  # G completions sampled per prompt
    prompts_per_step: int = 4  # prompts per update; the batch is prompts_per_step x group_size
    max_new_tokens: int = 128
    temperature: float = 1.0
    clip_epsilon: float = 0.2  # PPO-style ratio clip
    kl_coef: float = 0.04  # weight of the k3 KL estimate to the reference model
    format_reward: float = 0.0  # added when the completion parses in the task's output shape
    rollout: Literal["flax", "vllm"] = "flax"
    updates_per_rollout: int = 1  # optimizer updates on each rollout batch (ratio clip active > 1)
    # The task that scores completions: a registered task name, or "package.module:OBJECT"
    # naming a user's `Task` (imported and registered); null: the first data source's task.
    task: str | None = None
    # The task metric paid as the reward (e.g. viggo's attribute_f1 for partial credit, where
    # exact match gives a near-converged model little to tell its samples apart); checked
    # against the task's metrics when the task is resolved. null: the task's own `reward`.
    reward_metric: str | None = None
    # Rounds of sampling per step at most: groups whose completions all scored the same are set
    # aside and more prompts drawn until prompts_per_step groups differ (DAPO's dynamic
    # sampling); 1: off, every group of the one round is trained on.
    dynamic_sampling_rounds: int = 1

    def __post_init__(self) -> None:
        for name in ("group_size", "prompts_per_step", "max_new_tokens", "updates_per_rollout",
                     "dynamic_sampling_rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"objective.grpo.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ConfigError("objective.grpo.group_size must be >= 2: advantages are relative "
                              "to the group")
        if self.temperature <= 0:
            raise ConfigError(f"objective.grpo.temperature must be > 0, got {self.temperature}")
        if self.clip_epsilon <= 0 or self.kl_coef < 0 or self.format_reward < 0:
            raise ConfigError("objective.grpo: clip_epsilon must be > 0, kl_coef and "
                              "format_reward >= 0")


@dataclass(frozen=True)
class ObjectiveConfig:
    """What the run optimises: next-token likelihood (sft), preferences (dpo) or a reward (grpo).

    Orthogonal to `method` (which weights train): DPO and GRPO work with full, LoRA and freeze.
    """

    name: Literal["sft", "dpo", "grpo"] = "sft"
    dpo: DpoConfig = field(default_factory=DpoConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Length and shape of the run. `batch_size` is global (all devices and hosts)."""

    steps: int = 100
    epochs: float | None = None  # when set, steps = ceil(epochs * train rows / batch_size)
    batch_size: int = 8
    micro_batches: int = 1  # gradient accumulation: batch_size / micro_batches rows per pass
    seed: int = 0
    log_every: int = 10
    progress: bool = True
    # Stop (with a checkpoint) after this wall time; the schedule's length is then fixed from
    # the times of the first steps so that its decay ends inside the budget (schedule_plan.py).
    time_budget_minutes: float | None = None
    budget_probe_steps: int = 5  # steps timed after the first (compiling) one to fix the length
    peak_tflops_per_device: float | None = None  # MFU denominator; null: measure a matmul
    # glibc policy for XLA:CPU's per-step host buffers: bounded | retain | huge_pages | system
    # (train/host_memory.py); `jaxtune train` re-executes itself once to apply it.
    host_allocator: HostAllocator = "bounded"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "micro_batches", "log_every", "budget_probe_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if self.time_budget_minutes is not None and self.time_budget_minutes <= 0:
            raise ConfigError(f"train.time_budget_minutes must be > 0, got "
                              f"{self.time_budget_minutes}")
        if self.batch_size % self.micro_batches:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of "
                              f"train.micro_batches ({self.micro_batches})")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic validation: loss on `batches` batches; a task metric on `task_samples` examples."""

    every: int = 50  # steps; 0 disables periodic evaluation
    batches: int = 4
    task_samples: int = 0  # 0 disables the generation-based task metric
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        for name in ("every", "batches", "task_samples", "max_new_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpoints every `every` steps (and at the end): the last `keep` plus the best."""

    every: int = 100
    keep: int = 2
    keep_best: int = 1  # also keep the best `keep_best` by `best_metric` (0: only the last)
    best_metric: str = "val_loss"
    best_mode: Literal["min", "max"] = "min"
    async_save: bool = True

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1 or self.keep_best < 0:
            raise ConfigError("checkpoint.every and checkpoint.keep must be >= 1, "
                              "checkpoint.keep_best >= 0")


@dataclass(frozen=True)
class DataSource:
    """One dataset of the training mixture with its sampling weight."""

    dataset: DataConfig
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ConfigError(f"data source weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class DataSection:
    """The training data: one source, or a weighted mixture (all with the same max_length)."""

    sources: tuple[DataSource, ...] = ()
    prepared_dir: str | None = None  # default: RUN_DIR/data

    def __post_init__(self) -> None:
        if not self.sources:
            raise ConfigError("data.sources needs at least one dataset")
        lengths = {s.dataset.max_length for s in self.sources}
        if len(lengths) > 1:
            raise ConfigError(f"data.sources have different max_length {sorted(lengths)}; "
                              "a mixture needs one row length")
        if sum(s.weight for s in self.sources) <= 0:
            raise ConfigError("data.sources weights must have a positive sum")

    @property
    def max_length(self) -> int:
        return self.sources[0].dataset.max_length


@dataclass(frozen=True)
class RunConfig:
    """Everything one `jaxtune train` run needs.

    `stages` (optional) are mappings of overrides applied in order on top of this config:
    stage k+1 starts from stage k's final checkpoint and writes to RUN_DIR/stage-k+1.
    """

    model: ModelSpec
    data: DataSection
    run_dir: str = "runs/default"
    mesh: MeshConfig = field(default_factory=MeshConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    stages: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        tasks = {s.dataset.task for s in self.data.sources}
        if self.objective.name == "dpo" and tasks != {"preference"}:
            raise ConfigError("objective.name=dpo trains on preference pairs: every data source "
                              f"needs task: preference (got {', '.join(sorted(tasks))})")
        if self.objective.name != "dpo" and "preference" in tasks:
            raise ConfigError("data task preference holds (prompt, chosen, rejected) pairs, "
                              f"which only objective.name=dpo trains on (got "
                              f"{self.objective.name})")
        lora = self.method.lora if self.method.name == "lora" else None
        if self.model.scan_layers and lora is not None and lora.dropout > 0:
            # The layer scan rebuilds each block from its stacked state, so dropout's RNG
            # counters would not advance between steps: the same masks every step.
            raise ConfigError("model.scan_layers=true does not support method.lora.dropout > 0 "
                              f"(got {lora.dropout}); set method.lora.dropout=0 or "
                              "model.scan_layers=false")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (what `config.yaml` in the run directory holds)."""
        return to_plain(self)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of the raw mapping with ``key=value`` overrides applied (not yet validated)."""
    tree = copy.deepcopy(dict(raw))
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["model"] and isinstance(value, str):
            model = dict(tree.get("model") or {})
            model.pop("architecture", None)
            model["path"] = value
            tree["model"] = model
            continue
        apply_override(tree, keys, value, text)
    return tree


def run_config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a raw mapping (and every stage applied to it) into a `RunConfig`."""
    cfg = build(RunConfig, raw)
    for index, stage in enumerate(cfg.stages):
        stage_tree = merge_stage(raw, stage)
        try:
            build(RunConfig, stage_tree)
        except ConfigError as exc:
            raise ConfigError(f"stages.{index}: {exc}") from None
    return cfg


def merge_stage(raw: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """The raw config of a stage: the base without `stages`, deep-updated by the stage."""
    tree = copy.deepcopy({k: v for k, v in raw.items() if k != "stages"})
    _deep_update(tree, stage)
    return tree


def _deep_update(tree: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _deep_update(tree[key], value)
        else:
            tree[key] = copy.deepcopy(value)


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read the YAML run config at `path`, apply `overrides` and validate it."""
    return run_config_from_dict(apply_overrides(read_yaml(path), overrides))


def load_raw_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw (validated) mapping: what stages are merged onto."""
    raw = apply_overrides(read_yaml(path), overrides)
    run_config_from_dict(raw)
    return raw
