"""Build a Flax `LlamaForCausalLM` holding given params (from an HF folder or a checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from train_jax import checkpoint as ckpt
from train_jax.convert import names
from train_jax.convert.errors import ShapeMismatchError
from train_jax.convert.hf_import import from_hf
from train_jax.model.config import ModelConfig
from train_jax.model.llama import LlamaForCausalLM


def model_from_params(cfg: ModelConfig, params: Mapping[str, Any]) -> LlamaForCausalLM:
    """A model whose parameters are `params` (cast to `cfg.param_dtype`), without random init."""
    abstract = nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0)))
    graphdef, state, rest = nnx.split(abstract, nnx.Param, ...)
    expected = names.flatten(nnx.to_pure_dict(state))
    given = names.flatten(params)
    if set(expected) != set(given):
        missing = sorted(".".join(map(str, p)) for p in set(expected) - set(given))
        extra = sorted(".".join(map(str, p)) for p in set(given) - set(expected))
        raise ShapeMismatchError(f"params do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    dtype = jnp.dtype(cfg.param_dtype)
    leaves = {}
    for path, spec in expected.items():
        if tuple(given[path].shape) != tuple(spec.shape):
            raise ShapeMismatchError(f"parameter {'.'.join(map(str, path))} has shape "
                                     f"{tuple(given[path].shape)}, the model needs {spec.shape}")
        leaves[path] = jnp.asarray(given[path], dtype=dtype)
    nnx.replace_by_pure_dict(state, names.unflatten(leaves))
    return nnx.merge(graphdef, state, rest)


def load_flax_model(path: str | Path, **config_options: Any) -> tuple[ModelConfig, LlamaForCausalLM]:
    """Model from an HF folder / hub id or from a jaxtune checkpoint (latest step)."""
    if ckpt.is_jaxtune_checkpoint(path):
        info = ckpt.read_checkpoint_info(path)
        cfg = info.to_model_config(**config_options)
        params = ckpt.restore_params(path)
    else:
        cfg, params = from_hf(path, **config_options)
    return cfg, model_from_params(cfg, params)


def logits_fn(model: LlamaForCausalLM):
    """A jitted `input_ids -> float32 logits` for `model` (one compile per input shape)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, input_ids):
        return nnx.merge(graphdef, state)(input_ids)

    return lambda input_ids: run(state, jnp.asarray(input_ids, jnp.int32))
