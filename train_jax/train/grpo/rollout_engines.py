"""Rollout engines other than the Flax sampler, plugged in from outside the training core.

The training core imports no serving stack (the layer contracts in pyproject.toml), so an engine
such as vLLM is registered by the layer above (`jaxtune train` in infra registers
`objective.grpo.rollout: vllm`) and built here from a `RolloutEngineSpec`: an HF folder of the
starting weights, the rollout's shape, and `weights(trainable, frozen)`, the current policy's
tensors under their HF names, which the engine loads before each rollout (after each update the
policy differs from the engine's copy).

An engine is called like `grpo.rollout.Sampler`:
`engine(trainable, frozen, prompts, pad, key) -> (tokens, counts)` as host arrays, tokens 0
after a row's EOS and counts including the EOS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from train_jax.config.loading import ConfigError
from train_jax.convert.hf_export import has_lora, hf_tensors, merge_lora, to_hf
from train_jax.model.config import ModelConfig
from train_jax.model.generate import eos_ids
from train_jax.train.partition import PureTree, merge_pure

Weights = Iterator[tuple[str, np.ndarray]]
RolloutFn = Callable[[PureTree, PureTree, np.ndarray, np.ndarray, jax.Array],
                     tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RolloutEngineSpec:
    """What an engine needs to sample rollouts of the policy being trained."""

    model_dir: Path  # HF folder of the starting weights (tokenizer files included)
    rows: int  # prompts_per_step x group_size
    width: int  # the prompts' left-padded width
    max_new_tokens: int
    temperature: float
    eos_token_ids: tuple[int, ...]
    dtype: str  # the engine's compute dtype: "float32" or "bfloat16"
    weights: Callable[[PureTree, PureTree], Weights]  # current policy -> (HF name, array)


EngineFactory = Callable[[RolloutEngineSpec], RolloutFn]
_FACTORIES: dict[str, EngineFactory] = {}


def register_rollout_engine(name: str, factory: EngineFactory) -> None:
    """Make `objective.grpo.rollout: <name>` build its engine with `factory`."""
    _FACTORIES[name] = factory


def build_rollout_engine(name: str, spec: RolloutEngineSpec) -> RolloutFn:
    """The registered engine `name` for `spec`; `ConfigError` when none is registered."""
    if name not in _FACTORIES:
        raise ConfigError(f"objective.grpo.rollout={name} needs its engine registered by the "
                          f"caller (`jaxtune train` registers vllm when vLLM is installed); "
                          f"use objective.grpo.rollout=flax")
    return _FACTORIES[name](spec)


def engine_spec(name: str, model_cfg: ModelConfig, start: PureTree, assets_dir: Path | None,
                work_dir: Path, *, rows: int, width: int, max_new_tokens: int,
                temperature: float, eos_token_id: int | list[int] | None,
                dtype: str) -> RolloutEngineSpec:
    """Write the starting weights (`start`, the full params tree) as an HF folder under
    `work_dir` and describe the rollout for engine `name`.

    The engine's model has its own LM head even when the policy ties it to the embeddings:
    vLLM's in-place weight reload does not reach a tied head (it kept the starting head, 0.74
    nat off after a reload on the tiny model, where an untied one matched within 1e-6), so a
    tied policy is handed over untied, the head a copy of the embeddings at every reload.
    """
    engine_cfg = model_cfg.replace(lora=None, tie_word_embeddings=False)

    def engine_params(trainable: PureTree, frozen: PureTree) -> dict[str, Any]:
        params: Any = jax.device_get(merge_pure(trainable, frozen))
        if has_lora(params):
            params = merge_lora(params, model_cfg.lora)
        if model_cfg.tie_word_embeddings:
            params = {**params, "lm_head": {"kernel": np.asarray(
                params["embed_tokens"]["embedding"]).T}}
        return params

    folder = work_dir / f"{name}_rollout_model"
    to_hf(engine_params(start, {}), engine_cfg, folder, dtype="fp32", assets_from=assets_dir)
    return RolloutEngineSpec(folder, rows, width, max_new_tokens, temperature,
                             eos_ids(eos_token_id), dtype,
                             lambda trainable, frozen: hf_tensors(
                                 engine_params(trainable, frozen), engine_cfg, "fp32"))
