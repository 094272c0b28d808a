"""The hand-written backward of `dense` / `dense_transposed` equals autodiff of the plain product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_jax.model.dense import dense, dense_transposed


def _grads(fn, x, w, cotangent):
    _, vjp = jax.vjp(fn, x, w)
    return vjp(cotangent)


@pytest.mark.parametrize("compute_dtype", [jnp.float32, jnp.bfloat16])
def test_dense_matches_autodiff(compute_dtype):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 5, 16), compute_dtype)
    kernel = jax.random.normal(keys[1], (16, 24), jnp.float32)
    cotangent = jax.random.normal(keys[2], (2, 5, 24), compute_dtype)
    plain = lambda x, w: x @ w.astype(x.dtype)
    np.testing.assert_allclose(np.asarray(dense(x, kernel), np.float32), np.asarray(plain(x, kernel), np.float32),
                               rtol=1e-5 if compute_dtype == jnp.float32 else 1e-2, atol=1e-5)
    got, want = _grads(dense, x, kernel, cotangent), _grads(plain, x, kernel, cotangent)
    tol = 1e-5 if compute_dtype == jnp.float32 else 2e-2
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=tol, atol=tol)


def test_dense_transposed_matches_autodiff():
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (3, 4, 16))
    table = jax.random.normal(keys[1], (40, 16))
    cotangent = jax.random.normal(keys[2], (3, 4, 40))
    plain = lambda x, t: x @ t.T
    np.testing.assert_allclose(dense_transposed(x, table), plain(x, table), rtol=1e-5, atol=1e-5)
    got, want = _grads(dense_transposed, x, table, cotangent), _grads(plain, x, table, cotangent)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_a_weight_that_is_not_differentiated_costs_no_weight_gradient():
    # LoRA and frozen layers take no gradient of the base kernel: the dW product must be
    # dead code that XLA removes, not work done and thrown away.
    x, kernel = jnp.ones((4, 8, 16)), jnp.ones((16, 32))
    hlo = jax.jit(jax.grad(lambda x: dense(x, kernel).sum())).lower(x).compile().as_text()
    dots = [line.split("=", 1)[1] for line in hlo.splitlines() if " dot(" in line]
    assert dots, "the input gradient's product is missing"
    assert not [d for d in dots if "f32[16,32]" in d.split("dot(")[0]], dots
