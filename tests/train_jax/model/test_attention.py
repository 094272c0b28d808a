"""The hand-written attention backward equals autodiff of `jax.nn.dot_product_attention`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.kernels.mask import attention_mask
from train_jax.model.kernels.xla_cpu.attention import grouped_query_attention
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
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    assert_same_vjp(lambda q, k, v: grouped_query_attention(q, k, v, mask), reference, (q, k, v),
                    cotangent, value_tol=tol, grad_tol=tol)


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
    assert_same_vjp(inside, first, (q, k, v), cotangent, value_tol=1e-5)
