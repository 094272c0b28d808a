"""Attention as cuDNN flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`).

Causal through cuDNN's own causal mask; packed segments through a (B, 1, T, T) mask that
`jax.nn.dot_product_attention` hands to cuDNN as a bias; grouped-query heads natively. Where
cuDNN cannot run the call, XLA's attention (`implementation="xla"`, the same function written
in XLA ops, values equal to `reference`) does, with a warning naming the reason:
- not compiling for a GPU (e.g. the tests, on CPU);
- a dtype other than bfloat16 / float16 (cuDNN has no float32 flash attention);
- a head_dim above 128 or not a multiple of 8, or an odd length with a mask (cuDNN limits);
- anything else jax's cuDNN wrapper rejects while tracing (cuDNN missing, too old, ...).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from train_jax.model.kernels.mask import attention_mask
from train_jax.model.kernels.platform import target_platform, warn_fallback
from train_jax.model.rope import apply_rope

CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every GPU cuDNN supports


def cudnn_unsupported(q: jax.Array, masked: bool) -> str | None:
    """Why cuDNN flash attention cannot take q (B, T, N, H); None if it can."""
    t, h = q.shape[1], q.shape[3]
    if target_platform() not in ("gpu", "cuda"):
        return f"not compiling for a CUDA GPU ({target_platform()})"
    if q.dtype not in CUDNN_DTYPES:
        return f"dtype {q.dtype} (cuDNN flash attention takes bfloat16 or float16)"
    if h > MAX_HEAD_DIM or h % 8:
        return f"head_dim {h} (cuDNN takes a multiple of 8 up to {MAX_HEAD_DIM})"
    if masked and t % 2:
        return f"odd sequence length {t} with a segment mask"
    return None


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, *,
              rope: tuple[jax.Array, jax.Array] | None = None, causal: bool = True) -> jax.Array:
    """Self-attention of q (B, T, N, H) over k, v (B, T, K, H); as `reference.attention`."""
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    b, t = q.shape[:2]
    # Same-segment pairs (B, 1, T, S); the causal part is cuDNN's (or XLA's) own mask.
    mask = None if segment_ids is None else attention_mask(segment_ids, b, t, causal=False)
    reason = cudnn_unsupported(q, mask is not None)
    if reason is None:
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                                implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as exc:  # raised while tracing
            reason = f"cuDNN rejected the call ({exc})"
    warn_fallback("gpu", reason, instead="XLA attention")
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")
