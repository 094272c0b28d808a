"""The hand-written RMSNorm backward equals autodiff of the plain formula in float32, and in
bf16 its scale gradient is closer to the exact (float64) one than autodiff's bf16 sum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.kernels.xla_cpu.norm import rms_norm

EPS = 1e-5


def _plain(x, scale):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + EPS)
    return scale.astype(x.dtype) * normed.astype(x.dtype)


def _inputs(dtype, shape=(2, 5, 16)):
    keys = jax.random.split(jax.random.key(0), 3)
    x = (3.0 * jax.random.normal(keys[0], shape)).astype(dtype)
    scale = 1.0 + 0.1 * jax.random.normal(keys[1], shape[-1:])
    return x, scale, jax.random.normal(keys[2], shape).astype(dtype)


def test_float32_values_and_gradients_match_autodiff():
    x, scale, d_y = _inputs(jnp.float32)
    assert_same_vjp(lambda x, s: rms_norm(x, s, EPS), _plain, (x, scale), d_y)


def test_bf16_gradients_are_close_to_exact():
    x, scale, d_y = _inputs(jnp.bfloat16, shape=(8, 128, 64))
    got = rms_norm(x, scale, EPS)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(_plain(x, scale), np.float32))
    d_x, d_scale = jax.vjp(lambda x, s: rms_norm(x, s, EPS), x, scale)[1](d_y)
    auto_d_x, auto_d_scale = jax.vjp(_plain, x, scale)[1](d_y)
    assert d_x.dtype == jnp.bfloat16 and d_scale.dtype == scale.dtype
    # Exact scale gradient: sum over positions of d_y times the bf16-rounded normalised x.
    d_y64 = np.asarray(d_y, np.float64)
    normed = np.asarray(_plain(x, jnp.ones_like(scale)), np.float64)  # rounded like the forward
    exact = (d_y64 * normed).sum(axis=(0, 1))
    err, auto_err = np.abs(d_scale - exact).max(), np.abs(auto_d_scale - exact).max()
    assert err <= auto_err and err < 0.05 * np.abs(exact).max(), (err, auto_err)
    np.testing.assert_allclose(np.asarray(d_x, np.float32), np.asarray(auto_d_x, np.float32),
                               rtol=5e-2, atol=5e-2)
