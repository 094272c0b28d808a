"""RMSNorm with a hand-written backward pass.

Forward as transformers computes it: the normalisation in float32, rounded to the input
dtype, then scaled in the input dtype. The backward pass is the textbook one, in float32.

Why by hand: autodiff's gradient of the scale is a bf16 sum over every (batch, time)
position, which XLA:CPU ran as a slow reduce-window and which loses precision; here the
products and the sum are float32 (timings and errors: docs/BENCHMARKS.md#training, "RMSNorm
backward by hand").
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp


def _normalise(x: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
    x32 = x.astype(jnp.float32)
    inv_rms = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return x32 * inv_rms, inv_rms


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """`scale * x / rms(x)` in x's dtype; rms over the last axis, in float32."""
    return _forward(x, scale, eps)[0]


def _forward(x: jax.Array, scale: jax.Array, eps: float
             ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    normed, inv_rms = _normalise(x, eps)
    return scale.astype(x.dtype) * normed.astype(x.dtype), (x, scale, inv_rms)


def _backward(eps: float, residuals: tuple[jax.Array, jax.Array, jax.Array], d_y: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    del eps
    x, scale, inv_rms = residuals
    normed = x.astype(jnp.float32) * inv_rms
    d_y32 = d_y.astype(jnp.float32)
    # The forward scaled the normalised value as rounded to x's dtype.
    rounded = normed.astype(x.dtype).astype(jnp.float32)
    d_scale = jnp.sum((d_y32 * rounded).reshape(-1, x.shape[-1]), axis=0)
    d_normed = d_y32 * scale.astype(x.dtype).astype(jnp.float32)
    d_x = inv_rms * (d_normed - normed * jnp.mean(d_normed * normed, axis=-1, keepdims=True))
    return d_x.astype(x.dtype), d_scale.astype(scale.dtype)


rms_norm.defvjp(_forward, _backward)
