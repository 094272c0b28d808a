"""The SwiGLU gate `silu(gate) * up` with a hand-written backward pass.

Computed in float32 and rounded to the input dtype once, forward and backward: with bf16
inputs that is closer to the exact value than autodiff of `jax.nn.silu(gate) * up`, which
rounds the SiLU, the product and each gradient term to bf16 in turn.

Why by hand: XLA:CPU ran autodiff's version as several bf16 elementwise passes over the
(batch, time, mlp) activations (the sigmoid's exp and divide among them); here the forward is
one pass over gate and up, and the backward one pass over gate, up and the incoming gradient
(docs/BENCHMARKS.md#training, "SwiGLU gate by hand").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """`silu(gate) * up` in gate's dtype, computed in float32."""
    g32 = gate.astype(jnp.float32)
    return (g32 * jax.nn.sigmoid(g32) * up.astype(jnp.float32)).astype(gate.dtype)


def _forward(gate: jax.Array, up: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return swiglu(gate, up), (gate, up)


def _backward(residuals: tuple[jax.Array, jax.Array], d_out: jax.Array) -> tuple[jax.Array, jax.Array]:
    # The barrier keeps XLA from merging the sigmoid and SiLU below with the forward's (the
    # same expressions of the same inputs): merged, XLA:CPU kept both as float32 arrays from
    # the forward to the backward and split the forward into five passes. Recomputed here
    # from the bf16 inputs, the forward is one pass after the inputs' rounding (see "An
    # optimization barrier on SwiGLU's backward residuals", docs/BENCHMARKS.md#training).
    gate, up = jax.lax.optimization_barrier(residuals)
    g32, d32 = gate.astype(jnp.float32), d_out.astype(jnp.float32)
    sig = jax.nn.sigmoid(g32)
    silu = g32 * sig
    # d silu(g) / dg = sig + g * sig * (1 - sig) = sig + silu * (1 - sig)
    d_gate = d32 * up.astype(jnp.float32) * (sig + silu * (1.0 - sig))
    return d_gate.astype(gate.dtype), (d32 * silu).astype(up.dtype)


swiglu.defvjp(_forward, _backward)
