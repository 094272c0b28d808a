"""Token cross-entropy fused with the LM head product, with a hand-written backward pass.

`head_cross_entropy(hidden, table, targets)[b, t]` is the cross-entropy of softmax(hidden[b, t]
@ table.T) at targets[b, t]: the same value as `optax.softmax_cross_entropy_with_integer_labels`
of the float32 logits, computed in float32 with the products accumulated in float32.

Why fused: the head is the largest product of a small model (SmolLM2-135M: 49,152 x 576, a
fifth of the FLOPs) and its logits the largest activation (200 MB of float32 per 1,024 tokens).
Autodiff of "logits, then log-softmax" keeps the float32 logits, runs the softmax backward over
them as a separate pass, and forms the table's gradient by contracting the (token, vocab)
gradient over its leading dimension, a layout XLA:CPU first transposes. Here:

- The logits are laid out (vocab, batch, time). Each product then contracts the last dimension
  of its left operand (the layouts XLA:CPU's fast dot kernels take without a transpose), and
  the softmax reductions run over the leading dimension, vectorised across tokens.
- The forward pass under differentiation already forms softmax - one_hot, the gradient for a
  unit cotangent, in the compute dtype, and keeps only that. The per-token cotangent (the loss
  mask over the token count) then scales the small operands: the hidden states for the table's
  gradient, and the hidden states' gradient itself. No second pass over the logits.

On SmolLM2-135M (1,024 tokens), head + loss forward + backward went from 404 to 315 ms in bf16
and from 950 to 540 ms in fp32 (docs/BENCHMARKS.md#training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from train_jax.model import axes


def _logits_vbt(hidden: jax.Array, table: jax.Array) -> jax.Array:
    """float32 logits (V, B, T) of hidden (B, T, D) against table (V, D)."""
    logits = jnp.einsum("vd,btd->vbt", table.astype(hidden.dtype), hidden,
                        preferred_element_type=jnp.float32)
    return axes.constrain(logits, axes.ACT_VBT)


def _softmax_stats(logits: jax.Array, targets: jax.Array
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token log-sum-exp, the one-hot target mask (V, B, T), and the target logit."""
    log_normaliser = jax.nn.logsumexp(logits, axis=0)
    # A comparison with the vocabulary index rather than a gather: it partitions like any
    # elementwise op when the vocabulary is sharded over `tensor`.
    is_target = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 0) == targets[None]
    target_logit = jnp.sum(jnp.where(is_target, logits, 0.0), axis=0)
    return log_normaliser, is_target, target_logit


@jax.custom_vjp
def head_cross_entropy(hidden: jax.Array, table: jax.Array, targets: jax.Array) -> jax.Array:
    """float32 (B, T) cross-entropy of the head `hidden @ table.T` at integer `targets`.

    hidden: (B, T, D) in the compute dtype; table: (V, D) (a tied embedding, or an untied
    head's kernel transposed), cast to hidden's dtype; targets: int (B, T) in [0, V).
    """
    log_normaliser, _, target_logit = _softmax_stats(_logits_vbt(hidden, table), targets)
    return log_normaliser - target_logit


def _forward(hidden: jax.Array, table: jax.Array, targets: jax.Array
             ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    logits = _logits_vbt(hidden, table)
    log_normaliser, is_target, target_logit = _softmax_stats(logits, targets)
    unit_grad = (jnp.exp(logits - log_normaliser[None]) - is_target).astype(hidden.dtype)
    return log_normaliser - target_logit, (hidden, table, unit_grad)


def _backward(residuals: tuple[jax.Array, jax.Array, jax.Array], cotangent: jax.Array
              ) -> tuple[jax.Array, jax.Array, None]:
    hidden, table, unit_grad = residuals
    scale = cotangent[..., None]  # (B, T, 1), float32
    # d table[v] = sum_bt unit_grad[v, b, t] * cotangent[b, t] * hidden[b, t]
    scaled_hidden = (hidden.astype(jnp.float32) * scale).astype(hidden.dtype)
    d_table = jnp.einsum("vbt,btd->vd", unit_grad, scaled_hidden,
                         preferred_element_type=jnp.float32).astype(table.dtype)
    # d hidden[b, t] = cotangent[b, t] * sum_v unit_grad[v, b, t] * table[v], formed as
    # table.T (D, V) @ unit_grad (V, B*T). The barrier keeps table.T a materialised (D, V)
    # array: folded into the product instead, XLA:CPU contracts the table over its leading
    # dimension, which is slower or (bf16 x bf16 -> f32) not implemented.
    table_t = jax.lax.optimization_barrier(table.astype(hidden.dtype).T)
    d_hidden_t = jnp.einsum("dv,vbt->dbt", table_t, unit_grad, preferred_element_type=jnp.float32)
    d_hidden = (d_hidden_t.transpose(1, 2, 0) * scale).astype(hidden.dtype)
    return d_hidden, d_table, None


head_cross_entropy.defvjp(_forward, _backward)
