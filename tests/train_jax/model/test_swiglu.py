"""The hand-written SwiGLU backward equals autodiff of `silu(gate) * up` in float32, and in bf16
its values and gradients are at least as close to the exact (float64) ones as autodiff's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.train_jax.model.vjp_check import assert_same_vjp
from train_jax.model.kernels.xla_cpu.swiglu import swiglu


def _plain(gate, up):
    return jax.nn.silu(gate) * up


def _inputs(dtype, shape=(4, 32, 48)):
    keys = jax.random.split(jax.random.key(0), 3)
    return tuple((3.0 * jax.random.normal(k, shape)).astype(dtype) for k in keys)


def _exact(gate, up, d_out):
    g, u, d = (np.asarray(a, np.float64) for a in (gate, up, d_out))
    sig = 1.0 / (1.0 + np.exp(-g))
    out = g * sig * u
    return out, d * u * (sig + g * sig * (1.0 - sig)), d * g * sig


def test_float32_values_and_gradients_match_autodiff():
    gate, up, d_out = _inputs(jnp.float32)
    assert_same_vjp(swiglu, _plain, (gate, up), d_out)


def test_bf16_is_at_least_as_close_to_exact_as_autodiff():
    gate, up, d_out = _inputs(jnp.bfloat16)
    got, vjp_got = jax.vjp(swiglu, gate, up)
    want, vjp_want = jax.vjp(_plain, gate, up)
    exact = _exact(gate, up, d_out)
    for ours, autodiff, truth in zip((got, *vjp_got(d_out)), (want, *vjp_want(d_out)), exact, strict=True):
        assert ours.dtype == jnp.bfloat16
        err = np.abs(np.asarray(ours, np.float64) - truth).max()
        auto_err = np.abs(np.asarray(autodiff, np.float64) - truth).max()
        assert err <= auto_err, (err, auto_err)
        assert err <= 2 ** -7 * np.abs(truth).max()  # within bf16 rounding of the largest value
