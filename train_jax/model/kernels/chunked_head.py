"""The LM head's cross-entropy over chunks of positions: the (B, T, V) logits never exist whole.

With a large vocabulary and long rows the head's float32 logits are a train step's largest
buffers: Llama-3's 128k vocabulary at 8k positions is 3.9 GiB per row, held more than once
for the softmax and its gradient. Here each row is cut into chunks of `CHUNK_POSITIONS`; a
chunk's logits are made, reduced to its losses and dropped, and made again in the backward
pass (`jax.checkpoint`), so the live logits are (B, chunk, V). The values are
`reference.head_cross_entropy`'s, which each chunk calls; the table's gradient is summed over
chunks in the table's own dtype (float32 master weights stay float32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from train_jax.model.kernels import reference
from train_jax.model.loops import scan_unroll

# Positions per chunk: 1024 x 128k vocabulary is 0.5 GiB of float32 logits per row, against
# 3.9 GiB for a whole 8k row; smaller chunks only add loop steps.
CHUNK_POSITIONS = 1024


def head_cross_entropy(hidden: jax.Array, table: jax.Array, targets: jax.Array,
                       chunk: int = CHUNK_POSITIONS) -> jax.Array:
    """float32 (B, T) cross-entropy of the head `hidden @ table.T` at integer `targets`,
    computed `chunk` positions at a time (signature and values of
    `reference.head_cross_entropy`). Rows of at most `chunk` positions take the plain path."""
    b, t, d = hidden.shape
    if t <= chunk:
        return reference.head_cross_entropy(hidden, table, targets)
    pad = -t % chunk
    if pad:  # padded positions compute a loss that is sliced off below
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    n = (t + pad) // chunk
    hidden_chunks = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)  # (n, B, chunk, D)
    target_chunks = targets.reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint  # keep only the chunk's inputs; its logits are recomputed backward
    def chunk_losses(h: jax.Array, y: jax.Array) -> jax.Array:
        return reference.head_cross_entropy(h, table, y)

    _, losses = jax.lax.scan(lambda carry, xs: (carry, chunk_losses(*xs)), None,
                             (hidden_chunks, target_chunks), unroll=scan_unroll())
    return losses.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
