"""Token cross-entropy fused with the LM head product, with a hand-written backward pass.

`head_cross_entropy(hidden, table, targets)[b, t]` is the cross-entropy of softmax(hidden[b, t]
@ table.T) at targets[b, t]: the same value as `optax.softmax_cross_entropy_with_integer_labels`
of the float32 logits, computed in float32 with the products accumulated in float32.

Why fused: the head is the largest product of a small model (SmolLM2-135M: 49,152 x 576, a
fifth of the FLOPs) and its logits the largest activation (200 MB of float32 per 1,024 tokens).
Autodiff of "logits, then log-softmax" keeps the float32 logits, runs the softmax backward over
them as a separate pass, and forms the table's gradient by contracting the (token, vocab)
gradient over its leading dimension, a layout XLA:CPU's fast dot kernels refuse. Here:

- The forward pass under differentiation already forms softmax - one_hot, the gradient for a
  unit cotangent, in the compute dtype, and keeps only that. The per-token cotangent (the loss
  mask over the token count) then scales the small operands: the hidden states for the table's
  gradient, and the hidden states' gradient itself. No second pass over the logits.
- The logits are laid out (batch, time, vocab). Every product then contracts the last dimension
  of its left operand, the layout XLA:CPU's fast dot kernels (YNNPACK) take, and the softmax
  reductions run over the contiguous last dimension. The table's gradient is formed transposed,
  (D, V) = hidden^T @ (softmax - one_hot), and transposed once.
- Why not (vocab, batch, time), as this op first did: XLA:CPU runs the (V, D) x (D, B*T)
  logits product markedly slower than (B*T, D) x (D, V).

Timings of each version against autodiff: docs/BENCHMARKS.md#training ("LM head fused with the
cross-entropy" and "The LM head, again").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from train_jax.model import axes


def _logits(hidden: jax.Array, table: jax.Array) -> jax.Array:
    """float32 logits (B, T, V) of hidden (B, T, D) against table (V, D)."""
    logits = jnp.einsum("btd,vd->btv", hidden, table.astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    return axes.constrain(logits, axes.ACT_BTV)


def _target_logit(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """logits[b, t, targets[b, t]]: a gather, far cheaper than a select-and-sum pass over the
    logits (XLA's SPMD partitioner masks and sums it when `tensor` shards the vocab)."""
    return jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


@jax.custom_vjp
def head_cross_entropy(hidden: jax.Array, table: jax.Array, targets: jax.Array) -> jax.Array:
    """float32 (B, T) cross-entropy of the head `hidden @ table.T` at integer `targets`.

    hidden: (B, T, D) in the compute dtype; table: (V, D) (a tied embedding, or an untied
    head's kernel transposed), cast to hidden's dtype; targets: int (B, T) in [0, V).
    """
    logits = _logits(hidden, table)
    return jax.nn.logsumexp(logits, axis=-1) - _target_logit(logits, targets)


def _forward(hidden: jax.Array, table: jax.Array, targets: jax.Array
             ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    logits = _logits(hidden, table)
    # exp is taken once, into a materialised (B, T, V) array that then gives both the sum and
    # the softmax. Fused into each of its two consumers instead, it ran twice, once in
    # XLA:CPU's single-threaded reduction (docs/BENCHMARKS.md#training, "exp once").
    shift = jnp.max(logits, axis=-1, keepdims=True)
    exps = jnp.exp(logits - shift)
    total = jnp.sum(exps, axis=-1, keepdims=True)
    log_normaliser = (shift + jnp.log(total))[..., 0]
    # The one-hot mask as a comparison with the vocabulary index: elementwise, so it partitions
    # like the logits when the vocabulary is sharded over `tensor`.
    is_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2) == targets[..., None]
    unit_grad = (exps * (1.0 / total) - is_target).astype(hidden.dtype)
    return log_normaliser - _target_logit(logits, targets), (hidden, table, unit_grad)


def _backward(residuals: tuple[jax.Array, jax.Array, jax.Array], cotangent: jax.Array
              ) -> tuple[jax.Array, jax.Array, None]:
    hidden, table, unit_grad = residuals
    scale = cotangent[..., None]  # (B, T, 1), float32
    # d table[v] = sum_bt unit_grad[b, t, v] * cotangent[b, t] * hidden[b, t], formed as
    # (D, V) = scaled_hidden^T (D, B, T) @ unit_grad (B, T, V). As (V, D) directly, the product
    # would contract unit_grad over its leading dimensions, which XLA:CPU's bf16 kernels refuse
    # (it then upcasts both operands to float32). The barriers keep both transposes
    # materialised: folded into the product as layouts, the product is refused again.
    scaled_hidden = (hidden.astype(jnp.float32) * scale).astype(hidden.dtype)
    scaled_hidden_t = jax.lax.optimization_barrier(jnp.transpose(scaled_hidden, (2, 0, 1)))
    d_table_t = jnp.einsum("dbt,btv->dv", scaled_hidden_t, unit_grad,
                           preferred_element_type=jnp.float32)
    d_table = jax.lax.optimization_barrier(d_table_t).T.astype(table.dtype)
    # d hidden[b, t] = cotangent[b, t] * sum_v unit_grad[b, t, v] * table[v]
    d_hidden = jnp.einsum("btv,vd->btd", unit_grad, table.astype(hidden.dtype),
                          preferred_element_type=jnp.float32)
    return (d_hidden * scale).astype(hidden.dtype), d_table, None


head_cross_entropy.defvjp(_forward, _backward)
