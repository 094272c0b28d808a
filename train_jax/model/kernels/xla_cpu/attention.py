"""Grouped-query softmax attention with a hand-written backward pass.

The forward pass is `jax.nn.dot_product_attention(q, k, v, mask=mask)` written out: explicit
(batch, head) transposes, both products accumulated in float32, softmax in float32, which
XLA:CPU runs faster than the library call (docs/BENCHMARKS.md#training, "The first
hand-written ops").

The backward pass is the textbook one. It is written by hand for the two products that
contract over the query positions, dK = dS^T Q and dV = P^T dO: autodiff forms them by
contracting the leading dimensions of (.., T, S) arrays, which XLA:CPU's bf16 kernels
(YNNPACK) refuse, so they ran upcast to float32. Here dS and P are transposed to
(.., S, G, T) first, so every product contracts the trailing dimensions of its left operand.

RoPE, when given, is applied inside, after the head split (see `grouped_query_attention`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from train_jax.model.kernels.mask import attention_mask
from train_jax.model.rope import apply_rope


def _query_groups(q: jax.Array, kv_heads: int) -> jax.Array:
    """(B, T, N, H) -> (B, K, G, T, H): the N query heads as K groups of G = N / K."""
    b, t, n, h = q.shape
    return q.reshape(b, t, kv_heads, n // kv_heads, h).transpose(0, 2, 3, 1, 4)


def _heads_first(x: jax.Array) -> jax.Array:
    """(B, S, K, H) <-> (B, K, S, H) (the permutation is its own inverse)."""
    return x.transpose(0, 2, 1, 3)


def _merge_heads(x: jax.Array) -> jax.Array:
    """(B, K, G, T, H) -> (B, T, K * G, H)."""
    b, kv, g, t, h = x.shape
    return x.transpose(0, 3, 1, 2, 4).reshape(b, t, kv * g, h)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, *,
              rope: tuple[jax.Array, jax.Array] | None = None, causal: bool = True) -> jax.Array:
    """The kernel-backend interface (`kernels.backend.AttentionFn`): self-attention of q
    (B, T, N, H) over k, v (B, T, K, H), masked by causality and packed `segment_ids` (B, T)."""
    b, t = q.shape[:2]
    return grouped_query_attention(q, k, v, attention_mask(segment_ids, b, t, causal=causal), rope)


def grouped_query_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                            rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """Softmax attention of q (B, T, N, H) over k, v (B, S, K, H), N a multiple of K.

    `mask` is boolean (B, 1, T, S), True where a query may attend to a key. `rope`, the
    (cos, sin) tables (B, T, 1, H) of `rope.rope_cos_sin`, rotates q and k first. Returns
    (B, T, N, H) in q's dtype.
    """
    if rope is None:
        groups, keys = _query_groups(q, k.shape[2]), _heads_first(k)
    else:
        groups, keys = _rotate_and_split(q, k, *rope)
    return _merge_heads(_attend(groups, keys, _heads_first(v), mask))


@jax.custom_vjp
def _rotate_and_split(q: jax.Array, k: jax.Array, cos: jax.Array, sin: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
    """RoPE on q and k, returned as (B, K, G, T, H) query groups and (B, K, S, H) keys.

    The rotation is applied after the transposes and its gradient before them: XLA:CPU fuses
    an elementwise op that feeds a transpose into one kernel writing in transposed order, far
    slower than the transpose followed by the rotation (docs/BENCHMARKS.md#training, "RoPE
    after the head split").
    """
    groups, keys = _query_groups(q, k.shape[2]), _heads_first(k)
    cos_t, sin_t = cos.transpose(0, 2, 1, 3), sin.transpose(0, 2, 1, 3)  # (B, 1, T, H)
    return (apply_rope(groups, cos_t[:, :, None], sin_t[:, :, None]),
            apply_rope(keys, cos_t, sin_t))


def _rotate_and_split_forward(q: jax.Array, k: jax.Array, cos: jax.Array, sin: jax.Array
                              ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, ...]]:
    return _rotate_and_split(q, k, cos, sin), (cos, sin)


def _rotate_and_split_backward(residuals: tuple[jax.Array, ...],
                               cotangents: tuple[jax.Array, jax.Array]
                               ) -> tuple[jax.Array, jax.Array, None, None]:
    cos, sin = residuals
    d_groups, d_keys = cotangents
    # The rotation is orthogonal: its transpose rotates by -angle (rope tables repeat each
    # frequency in both halves of H, so sin(-a) = -sin(a) halves line up).
    d_q = apply_rope(_merge_heads(d_groups), cos, -sin)
    d_k = apply_rope(_heads_first(d_keys), cos, -sin)
    return d_q, d_k, None, None


_rotate_and_split.defvjp(_rotate_and_split_forward, _rotate_and_split_backward)


def _probabilities(groups: jax.Array, keys: jax.Array, mask: jax.Array) -> jax.Array:
    """float32 softmax (B, K, G, T, S) of the scaled, masked scores."""
    scale = 1.0 / math.sqrt(groups.shape[-1])
    scores = jnp.einsum("bkgth,bksh->bkgts", groups, keys, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, :, None], scores * scale, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


@jax.custom_vjp
def _attend(groups: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array) -> jax.Array:
    """(B, K, G, T, H) attention output of query groups over keys and values (B, K, S, H)."""
    return _forward(groups, keys, values, mask)[0]


def _forward(groups: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array
             ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    probs = _probabilities(groups, keys, mask).astype(groups.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", probs, values, preferred_element_type=jnp.float32)
    out = out.astype(groups.dtype)
    return out, (groups, keys, values, probs, out)


def _backward(residuals: tuple[jax.Array, ...], d_o: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    groups, keys, values, probs, out = residuals  # d_o: (B, K, G, T, H), like groups
    h = groups.shape[-1]
    dtype = groups.dtype
    d_probs = jnp.einsum("bkgth,bksh->bkgts", d_o, values, preferred_element_type=jnp.float32)
    # Softmax backward, dS = P (dP - rowsum(dP P)). The row sum is dO . O, since
    # sum_s P_s (dO . V_s) = dO . sum_s P_s V_s (as in FlashAttention): a reduction over H
    # instead of over the (T, S) scores, and dS in one pass (docs/BENCHMARKS.md#training,
    # "Attention backward: the softmax row sum as dO . O"). Masked positions have p = 0 and
    # so get no gradient.
    row = jnp.sum(d_o.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    d_scores = probs.astype(jnp.float32) * (d_probs - row) * (1.0 / math.sqrt(h))
    d_scores = d_scores.astype(dtype)
    d_groups = jnp.einsum("bkgts,bksh->bkgth", d_scores, keys, preferred_element_type=jnp.float32)
    # Query positions last: the products below contract (G, T) as trailing dimensions.
    d_scores_t = d_scores.transpose(0, 1, 4, 2, 3)  # (B, K, S, G, T)
    probs_t = probs.transpose(0, 1, 4, 2, 3)
    d_keys = jnp.einsum("bksgt,bkgth->bksh", d_scores_t, groups, preferred_element_type=jnp.float32)
    d_values = jnp.einsum("bksgt,bkgth->bksh", probs_t, d_o, preferred_element_type=jnp.float32)
    return d_groups.astype(dtype), d_keys.astype(dtype), d_values.astype(dtype), None


_attend.defvjp(_forward, _backward)
