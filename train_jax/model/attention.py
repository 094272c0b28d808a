"""Grouped-query softmax attention with a hand-written backward pass.

The forward pass is `jax.nn.dot_product_attention(q, k, v, mask=mask)` written out: explicit
(batch, head) transposes, both products accumulated in float32, softmax in float32. On
XLA:CPU that took an attention layer's forward + backward on SmolLM2-135M from 27 to 17 ms in
bf16 (docs/BENCHMARKS.md#training).

The backward pass is the textbook one. It is written by hand for the two products that
contract over the query positions, dK = dS^T Q and dV = P^T dO: autodiff forms them by
contracting the leading dimensions of (.., T, S) arrays, which XLA:CPU's bf16 kernels
(YNNPACK) refuse, so they ran upcast to float32. Here dS and P are transposed to
(.., S, G, T) first, so every product contracts the trailing dimensions of its left operand.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _split_heads(q: jax.Array, k: jax.Array, v: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    b, t, n, h = q.shape
    kv = k.shape[2]
    groups = q.reshape(b, t, kv, n // kv, h).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, H)
    return groups, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # keys, values (B, K, S, H)


def _merge_heads(x: jax.Array) -> jax.Array:
    """(B, K, G, T, H) -> (B, T, K * G, H)."""
    b, kv, g, t, h = x.shape
    return x.transpose(0, 3, 1, 2, 4).reshape(b, t, kv * g, h)


def _probabilities(groups: jax.Array, keys: jax.Array, mask: jax.Array) -> jax.Array:
    """float32 softmax (B, K, G, T, S) of the scaled, masked scores."""
    scale = 1.0 / math.sqrt(groups.shape[-1])
    scores = jnp.einsum("bkgth,bksh->bkgts", groups, keys, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, :, None], scores * scale, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1)


@jax.custom_vjp
def grouped_query_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention of q (B, T, N, H) over k, v (B, S, K, H), N a multiple of K.

    `mask` is boolean (B, 1, T, S), True where a query may attend to a key. Returns
    (B, T, N, H) in q's dtype.
    """
    groups, keys, values = _split_heads(q, k, v)
    probs = _probabilities(groups, keys, mask).astype(q.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", probs, values, preferred_element_type=jnp.float32)
    return _merge_heads(out.astype(q.dtype))


def _forward(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array
             ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    groups, keys, values = _split_heads(q, k, v)
    probs = _probabilities(groups, keys, mask).astype(q.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", probs, values, preferred_element_type=jnp.float32)
    return _merge_heads(out.astype(q.dtype)), (groups, keys, values, probs)


def _backward(residuals: tuple[jax.Array, ...], d_out: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array, None]:
    groups, keys, values, probs = residuals
    b, kv, g, t, h = groups.shape
    dtype = groups.dtype
    d_o = d_out.reshape(b, t, kv, g, h).transpose(0, 2, 3, 1, 4)  # (B, K, G, T, H)
    d_probs = jnp.einsum("bkgth,bksh->bkgts", d_o, values, preferred_element_type=jnp.float32)
    p32 = probs.astype(jnp.float32)
    # Softmax backward; masked positions have p = 0 and so get no gradient.
    d_scores = p32 * (d_probs - jnp.sum(d_probs * p32, axis=-1, keepdims=True))
    d_scores = (d_scores * (1.0 / math.sqrt(h))).astype(dtype)
    d_groups = jnp.einsum("bkgts,bksh->bkgth", d_scores, keys, preferred_element_type=jnp.float32)
    # Query positions last: the products below contract (G, T) as trailing dimensions.
    d_scores_t = d_scores.transpose(0, 1, 4, 2, 3)  # (B, K, S, G, T)
    probs_t = probs.transpose(0, 1, 4, 2, 3)
    d_keys = jnp.einsum("bksgt,bkgth->bksh", d_scores_t, groups, preferred_element_type=jnp.float32)
    d_values = jnp.einsum("bksgt,bkgth->bksh", probs_t, d_o, preferred_element_type=jnp.float32)
    d_q = _merge_heads(d_groups.astype(dtype))
    d_k = d_keys.astype(dtype).transpose(0, 2, 1, 3)
    d_v = d_values.astype(dtype).transpose(0, 2, 1, 3)
    return d_q, d_k, d_v, None


grouped_query_attention.defvjp(_forward, _backward)
