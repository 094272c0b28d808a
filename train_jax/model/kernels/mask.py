"""The boolean attention mask of causal self-attention over packed segments."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(segment_ids: jax.Array | None, batch: int, length: int, *,
                   causal: bool = True) -> jax.Array:
    """Boolean (B, 1, T, T): causal (unless `causal=False`), and within one packed segment when
    `segment_ids` (B, T) is given.

    Padding (segment 0) attends to padding, so no softmax row is empty; its loss is masked.
    """
    allowed = jnp.ones((length, length), dtype=bool)
    if causal:
        allowed = jnp.tril(allowed)
    allowed = allowed[None, None]
    if segment_ids is None:
        return jnp.broadcast_to(allowed, (batch, 1, length, length))
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return allowed & same
