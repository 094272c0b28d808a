"""The hand-written attention backward equals autodiff of `jax.nn.dot_product_attention`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_jax.model.attention import grouped_query_attention
from train_jax.model.llama import attention_mask
from train_jax.model.rope import apply_rope, rope_cos_sin


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_match_jax_attention(dtype):
    keys = jax.random.split(jax.random.key(0), 4)
    b, t, n, kv, h = 2, 6, 4, 2, 8
    q = jax.random.normal(keys[0], (b, t, n, h), dtype)
    k = jax.random.normal(keys[1], (b, t, kv, h), dtype)
    v = jax.random.normal(keys[2], (b, t, kv, h), dtype)
    cotangent = jax.random.normal(keys[3], (b, t, n, h), dtype)
    # Two packed segments in the first row: causal and block-diagonal.
    mask = attention_mask(jnp.array([[1, 1, 1, 2, 2, 2], [1] * 6]), b, t)
    reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask)
    got, vjp_got = jax.vjp(lambda q, k, v: grouped_query_attention(q, k, v, mask), q, k, v)
    want, vjp_want = jax.vjp(reference, q, k, v)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)
    for g, w in zip(vjp_got(cotangent), vjp_want(cotangent), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                                   rtol=tol, atol=tol)


def test_a_key_outside_the_segment_gets_no_gradient():
    q = jnp.ones((1, 4, 2, 8))
    k = jax.random.normal(jax.random.key(1), (1, 4, 1, 8))
    v = jax.random.normal(jax.random.key(2), (1, 4, 1, 8))
    mask = attention_mask(jnp.array([[1, 1, 2, 2]]), 1, 4)
    # Only the outputs of segment 1 (positions 0-1) are differentiated.
    cotangent = jnp.zeros((1, 4, 2, 8)).at[:, :2].set(1.0)
    _, vjp = jax.vjp(lambda k, v: grouped_query_attention(q, k, v, mask), k, v)
    d_k, d_v = vjp(cotangent)
    assert not np.any(np.asarray(d_k[:, 2:])) and not np.any(np.asarray(d_v[:, 2:]))
    assert np.any(np.asarray(d_v[:, :2]))


def test_rope_inside_equals_rope_applied_to_q_and_k_first():
    keys = jax.random.split(jax.random.key(3), 4)
    b, t, n, kv, h = 2, 5, 6, 3, 8
    q = jax.random.normal(keys[0], (b, t, n, h))
    k = jax.random.normal(keys[1], (b, t, kv, h))
    v = jax.random.normal(keys[2], (b, t, kv, h))
    positions = jnp.array([[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]])
    cos, sin = rope_cos_sin(positions, 1.0 / (10000.0 ** (jnp.arange(0, h, 2) / h)))
    mask = attention_mask(jnp.array([[1, 1, 1, 2, 2], [1] * 5]), b, t)

    def inside(q, k, v):
        return grouped_query_attention(q, k, v, mask, rope=(cos, sin))

    def first(q, k, v):
        return jax.nn.dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v,
                                            mask=mask)

    cotangent = jax.random.normal(keys[3], (b, t, n, h))
    got, vjp_got = jax.vjp(inside, q, k, v)
    want, vjp_want = jax.vjp(first, q, k, v)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(vjp_got(cotangent), vjp_want(cotangent), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
