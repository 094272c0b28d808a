"""The model a run starts from: pretrained (HF folder / hub id / jaxtune checkpoint) or random."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from train_jax import checkpoint as ckpt
from train_jax.config.run_config import MethodConfig, ModelSpec
from train_jax.model.config import ModelConfig
from train_jax.model.kernels.backend import resolve_backend
from train_jax.model.kernels.platform import target_platform
from train_jax.model.llama import LlamaForCausalLM, init_model

logger = logging.getLogger(__name__)


class ModelInitError(ValueError):
    """The starting weights do not fit the configured model."""


@dataclass
class InitialModel:
    """The starting model plus where its tokenizer and HF assets come from."""

    cfg: ModelConfig
    model: LlamaForCausalLM
    assets_dir: Path  # copied into CKPT_DIR/hf_assets (tokenizer, chat template, ...)
    # How the model was made (kind, path, seed) and the kernels it trains with ("kernels"):
    # written into CKPT_DIR/jaxtune_checkpoint.json, hence into an export's provenance.
    source: dict[str, Any] = field(default_factory=dict)


def load_initial_model(spec: ModelSpec, method: MethodConfig, seed: int) -> InitialModel:
    """Build the model of `spec`; LoRA adapters (if any) are freshly initialised from `seed`."""
    kernels = resolved_kernels(spec)
    options = {"dtype": spec.dtype, "param_dtype": spec.param_dtype,
               "kernels": kernels["backend"], "remat": spec.remat, "scan_layers": spec.scan_layers,
               "lora": method.lora if method.name == "lora" else None}
    params: dict[str, Any] | None = None
    if spec.path is None:
        cfg = ModelConfig.from_hf_config(dict(spec.architecture or {}), **options)
        assets = Path(spec.tokenizer or "")
        source = {"kind": "random", "seed": seed}
    elif ckpt.is_jaxtune_checkpoint(spec.path):
        from train_jax.convert.hf_export import has_lora, merge_lora

        info = ckpt.read_checkpoint_info(spec.path)
        cfg = ModelConfig.from_hf_config(info.model_config, **options)
        params = ckpt.restore_params(spec.path)
        if has_lora(params):
            if info.lora is None:
                raise ModelInitError(f"{spec.path} holds LoRA adapters but no LoRA spec")
            params = merge_lora(params, info.lora)  # the next stage starts from merged weights
        assets = ckpt.assets_dir(spec.path)
        source = {"kind": "jaxtune_checkpoint", "path": str(spec.path)}
    else:
        from train_jax.convert.hf_import import from_hf, resolve_model_dir

        # from_hf's own `dtype` would cast the weights; the compute dtype goes to the config.
        base_cfg, params = from_hf(spec.path)
        cfg = ModelConfig.from_hf_config(dict(base_cfg.hf_config), **options)
        assets = resolve_model_dir(spec.path)
        source = {"kind": "hf", "path": str(spec.path), "hf_dir": str(assets)}
    if spec.tokenizer is not None:
        assets = Path(spec.tokenizer)
    if not assets.is_dir():
        raise ModelInitError(f"tokenizer folder {assets} does not exist (model.tokenizer)")
    source["kernels"] = kernels
    model = init_model(cfg, seed)
    if params is not None:
        _load_base_weights(model, params, cfg.param_dtype)
    logger.info("model: %s, %d layers, hidden %d, %.1fM parameters (%s)", cfg.model_type,
                cfg.num_hidden_layers, cfg.hidden_size, _count(model) / 1e6, source["kind"])
    return InitialModel(cfg, model, assets, source)


def resolved_kernels(spec: ModelSpec) -> dict[str, str]:
    """The kernel backend `spec.kernels` resolves to here, logged once: the run's record of it."""
    platform = target_platform()
    backend = resolve_backend(spec.kernels, platform)
    logger.info("kernels: %s -> %s (platform %s)", spec.kernels, backend, platform)
    return {"setting": spec.kernels, "backend": backend, "platform": platform}


def _count(model: LlamaForCausalLM) -> int:
    import jax

    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _load_base_weights(model: LlamaForCausalLM, params: dict[str, Any], dtype: str) -> None:
    # Every non-adapter parameter of the model must come from `params` with the same shape.
    state = nnx.state(model, nnx.Param)
    current = state.to_pure_dict()

    def overlay(cur: Any, new: Any, path: str) -> Any:
        if isinstance(cur, dict):
            out = {}
            for key, value in cur.items():
                if isinstance(new, dict) and key in new:
                    out[key] = overlay(value, new[key], f"{path}.{key}")
                elif key in ("lora_a", "lora_b"):
                    out[key] = value
                else:
                    raise ModelInitError(f"starting weights lack parameter {path}.{key}")
            return out
        if tuple(np.shape(new)) != tuple(cur.shape):
            raise ModelInitError(f"parameter {path} has shape {np.shape(new)}, the model needs "
                                 f"{tuple(cur.shape)}")
        return jnp.asarray(new, dtype=dtype)

    nnx.replace_by_pure_dict(state, overlay(current, params, "params"))
    nnx.update(model, state)
