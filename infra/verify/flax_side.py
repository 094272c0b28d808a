"""Log-probabilities of the Flax model on the prompts, from a checkpoint step or an HF folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def flax_logprobs(source: Path, token_ids: Sequence[Sequence[int]], *,
                  step: int | None = None, weight_dtype: str = "float32") -> list[np.ndarray]:
    """(T, V) float32 log-probabilities per prompt, computed in float32.

    `source` is a jaxtune checkpoint (its `step`, latest by default; LoRA adapters applied as in
    training, without dropout) or an HF folder. With a `weight_dtype` narrower than float32 the
    checkpoint's weights are first rounded to it (LoRA adapters merged first, as the export
    does), so the comparison with a bf16/fp16 export measures the conversion, not the rounding.
    """
    import jax

    from train_jax import checkpoint as ckpt
    from train_jax.convert.flax_model import logits_fn, model_from_params
    from train_jax.convert.hf_import import from_hf

    options = {"dtype": "float32", "param_dtype": "float32"}
    if ckpt.is_jaxtune_checkpoint(source):
        info = ckpt.read_checkpoint_info(source)
        lora = dataclasses.replace(info.lora, dropout=0.0) if info.lora else None
        cfg = info.to_model_config(lora=lora, **options)
        params = ckpt.restore_params(source, step)
        if weight_dtype != "float32":
            params = _rounded(params, cfg.lora, weight_dtype)
            cfg = cfg.replace(lora=None)
    else:
        cfg, params = from_hf(source, **options)
    model = model_from_params(cfg, params)
    # One right-padded batch, one compile: causal attention keeps the padding out of the
    # positions that are read back.
    longest = max(len(ids) for ids in token_ids)
    batch = np.zeros((len(token_ids), longest), np.int32)
    for row, ids in enumerate(token_ids):
        batch[row, :len(ids)] = ids
    logprobs = np.asarray(jax.nn.log_softmax(logits_fn(model)(batch).astype("float32"), axis=-1))
    return [logprobs[row, :len(ids)] for row, ids in enumerate(token_ids)]


def _rounded(params, lora, weight_dtype: str):
    """float32 params holding the values the export of `params` in `weight_dtype` holds."""
    import jax
    import jax.numpy as jnp

    from train_jax.convert.hf_export import merge_lora

    if lora is not None:
        params = merge_lora(params, lora)
    return jax.tree.map(lambda leaf: jnp.asarray(leaf).astype(weight_dtype).astype(jnp.float32),
                        params)
