"""The hand-written backward of `dense` / `dense_transposed` equals autodiff of the plain product."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.kernels.xla_cpu.dense import dense, dense_transposed


@pytest.mark.parametrize("compute_dtype", [jnp.float32, jnp.bfloat16])
def test_dense_matches_autodiff(compute_dtype):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (2, 5, 16), compute_dtype)
    kernel = jax.random.normal(keys[1], (16, 24), jnp.float32)
    cotangent = jax.random.normal(keys[2], (2, 5, 24), compute_dtype)
    plain = lambda x, w: x @ w.astype(x.dtype)
    f32 = compute_dtype == jnp.float32
    assert_same_vjp(dense, plain, (x, kernel), cotangent, value_tol=1e-5 if f32 else 1e-2,
                    value_atol=1e-5, grad_tol=1e-5 if f32 else 2e-2)


def test_dense_transposed_matches_autodiff():
    keys = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(keys[0], (3, 4, 16))
    table = jax.random.normal(keys[1], (40, 16))
    cotangent = jax.random.normal(keys[2], (3, 4, 40))
    plain = lambda x, t: x @ t.T
    assert_same_vjp(dense_transposed, plain, (x, table), cotangent, value_tol=1e-5)


def test_a_weight_that_is_not_differentiated_costs_no_weight_gradient():
    # LoRA and frozen layers take no gradient of the base kernel: the dW product must be
    # dead code that XLA removes, not work done and thrown away.
    x, kernel = jnp.ones((4, 8, 16)), jnp.ones((16, 32))
    hlo = jax.jit(jax.grad(lambda x: dense(x, kernel).sum())).lower(x).compile().as_text()
    dots = [line.split("=", 1)[1] for line in hlo.splitlines() if " dot(" in line]
    assert dots, "the input gradient's product is missing"
    assert not [d for d in dots if "f32[16,32]" in d.split("dot(")[0]], dots
