"""The reference ops: plain `jax.numpy`, differentiated by autodiff.

Short and readable on purpose: every other backend is tested against these (values and
gradients), and `kernels: reference` runs the whole model on them. Products and reductions
accumulate in float32, or in the input dtype when it is wider (the float64 oracle of the tests
runs these same functions under `jax.experimental.enable_x64`). Shapes: B batch, T length,
N query heads, K kv heads, H head_dim, D hidden, V vocab.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from train_jax.model import axes
from train_jax.model.kernels.mask import attention_mask
from train_jax.model.rope import apply_rope


def _accumulator(dtype: jnp.dtype) -> jnp.dtype:
    """float32, or the input dtype when it is wider (float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, *,
              rope: tuple[jax.Array, jax.Array] | None = None, causal: bool = True) -> jax.Array:
    """Softmax self-attention of q (B, T, N, H) over k, v (B, T, K, H), N a multiple of K.

    RoPE tables `rope` (cos, sin), each (B, T, 1, H), rotate q and k first; the mask is causal
    and keeps each query within its packed segment (`segment_ids` (B, T), 0 = padding).
    Returns (B, T, N, H) in q's dtype.
    """
    if rope is not None:
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    b, t, n, h = q.shape
    kv_heads = k.shape[2]
    acc = _accumulator(q.dtype)
    groups = q.reshape(b, t, kv_heads, n // kv_heads, h)  # (B, T, K, G, H)
    scores = jnp.einsum("btkgh,bskh->bkgts", groups, k, preferred_element_type=acc)
    scores = scores * (1.0 / math.sqrt(h))
    mask = attention_mask(segment_ids, b, t, causal=causal)[:, :, None]  # (B, 1, 1, T, S)
    scores = jnp.where(mask, scores, jnp.finfo(acc).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v, preferred_element_type=acc)
    return out.reshape(b, t, n, h).astype(q.dtype)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """`scale * x / rms(x)` as transformers computes it: normalised in float32, rounded to x's
    dtype, then scaled in x's dtype."""
    x_acc = x.astype(_accumulator(x.dtype))
    normed = x_acc * jax.lax.rsqrt(jnp.mean(x_acc * x_acc, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """The MLP's gate `silu(gate) * up`, in gate's dtype."""
    return jax.nn.silu(gate) * up


def dense(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x @ kernel` in x's dtype; kernel is (in, out) and is cast to x's dtype."""
    out = jnp.einsum("...i,io->...o", x, kernel.astype(x.dtype),
                     preferred_element_type=_accumulator(x.dtype))
    return out.astype(x.dtype)


def dense_transposed(x: jax.Array, table: jax.Array) -> jax.Array:
    """`x @ table.T` in x's dtype; table is (out, in), e.g. a tied embedding used as LM head."""
    out = jnp.einsum("...i,oi->...o", x, table.astype(x.dtype),
                     preferred_element_type=_accumulator(x.dtype))
    return out.astype(x.dtype)


def head_cross_entropy(hidden: jax.Array, table: jax.Array, targets: jax.Array) -> jax.Array:
    """float32 (B, T) cross-entropy of the head `hidden @ table.T` at integer `targets`.

    hidden: (B, T, D) in the compute dtype; table: (V, D), cast to hidden's dtype; targets:
    int (B, T) in [0, V). The logits (B, T, V) are materialised (and kept for autodiff).
    """
    logits = jnp.einsum("btd,vd->btv", hidden, table.astype(hidden.dtype),
                        preferred_element_type=_accumulator(hidden.dtype))
    logits = axes.constrain(logits, axes.ACT_BTV)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - target
