"""Attention as Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`).

Causal, with packed sequences kept apart by segment ids (splash masks a key whose id differs
from the query's; padding, id 0, attends to padding as in `kernels.mask`), and grouped-query
heads natively (each kv head serves N / K query heads). One kernel call per batch row (vmap).
On a mesh it runs per shard (`axes.per_shard`), split by batch and, over a tensor axis that
divides the kv heads, by kv head with their query heads.
Off a TPU it runs in Pallas' interpret mode, which is how the tests check it on CPU.

Shapes splash does not take fall back to `reference` for that call, with a warning:
- a length that is not a multiple of 128 (the kernel's blocks are 128-lane multiples);
- a head_dim that is not a multiple of 64 (64 and 128 are the sizes it is used with);
- on several TPU devices without a per-shard map (`axes.per_shard`): Mosaic calls cannot be
  partitioned by XLA, so they must run inside a `shard_map` the sharding module provides.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from train_jax.model import axes
from train_jax.model.kernels import reference
from train_jax.model.kernels.platform import target_platform, warn_fallback
from train_jax.model.rope import apply_rope

LANES = 128  # splash block sizes are multiples of this
HEAD_DIM_MULTIPLE = 64
_BLOCK_SIZES = (512, 256, 128)
# Heads-first operands per shard: queries (B, K, G, T, H) grouped under their kv head, keys and
# values (B, K, T, H), segment ids (B, T); split by batch and by kv head (over `tensor`).
_ACT_BKGTH: axes.LogicalAxes = (axes.BATCH, axes.ACT_KV_HEADS, None, None, None)
_ACT_BKTH: axes.LogicalAxes = (axes.BATCH, axes.ACT_KV_HEADS, None, None)
_ACT_BT: axes.LogicalAxes = (axes.BATCH, None)


def unsupported(q: jax.Array, k: jax.Array, interpret: bool) -> str | None:
    """Why splash cannot run self-attention of q (B, T, N, H) over k (B, S, K, H); None if it can."""
    t, h, s = q.shape[1], q.shape[3], k.shape[1]
    if s != t:
        return f"key length {s} differs from query length {t} (splash here is self-attention)"
    if t % LANES:
        return f"sequence length {t} is not a multiple of {LANES}"
    if h % HEAD_DIM_MULTIPLE:
        return f"head_dim {h} is not a multiple of {HEAD_DIM_MULTIPLE}"
    if not interpret and jax.device_count() > 1 and not axes.has_per_shard_map():
        return ("several TPU devices but no per-shard map (axes.per_shard_map): a Mosaic "
                "kernel cannot be partitioned by XLA")
    return None


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, *,
              rope: tuple[jax.Array, jax.Array] | None = None, causal: bool = True) -> jax.Array:
    """Self-attention of q (B, T, N, H) over k, v (B, T, K, H); as `reference.attention`."""
    interpret = target_platform() != "tpu"
    reason = unsupported(q, k, interpret)
    if reason is not None:
        warn_fallback("tpu", reason)
        return reference.attention(q, k, v, segment_ids, rope=rope, causal=causal)
    b, t, n, h = q.shape
    # Splash does not scale the scores: the scale goes into q, with RoPE, rounded once.
    q_scaled = q.astype(jnp.float32)
    if rope is not None:
        q_scaled = apply_rope(q_scaled, *rope)
        k = apply_rope(k, *rope)
    q_scaled = (q_scaled * (1.0 / math.sqrt(h))).astype(q.dtype)
    if segment_ids is None:
        segment_ids = jnp.ones((b, t), jnp.int32)
    kv_heads = k.shape[2]
    groups = n // kv_heads

    def rows(q_bkgth: jax.Array, k_bkth: jax.Array, v_bkth: jax.Array, ids: jax.Array) -> jax.Array:
        # On a shard: this shard's kv heads and the query heads of each (all of them without a
        # tensor axis); query head i attends with kv head i // groups, locally as globally.
        rows_, local_kv = q_bkgth.shape[:2]
        kernel = _kernel(t, local_kv * groups, causal, interpret)

        def one(q_nth, k_kth, v_kth, ids_t):
            return kernel(q_nth, k_kth, v_kth, segment_ids=splash.SegmentIds(q=ids_t, kv=ids_t))

        q_bnth = q_bkgth.reshape(rows_, local_kv * groups, t, h)
        return jax.vmap(one)(q_bnth, k_bkth, v_bkth, ids).reshape(q_bkgth.shape)

    # Heads first; the query heads grouped under their kv head, so that a tensor axis splits
    # queries and keys by the same (kv head) dimension, or neither: GQA pairs stay on a shard.
    q_grouped = q_scaled.transpose(0, 2, 1, 3).reshape(b, kv_heads, groups, t, h)
    heads_first = (q_grouped, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3),
                   segment_ids.astype(jnp.int32))
    out = axes.per_shard(rows, heads_first, (_ACT_BKGTH, _ACT_BKTH, _ACT_BKTH, _ACT_BT),
                         _ACT_BKGTH)
    out = out.reshape(b, n, t, h)
    return out.transpose(0, 2, 1, 3)  # (B, T, N, H)


@functools.cache
def _kernel(length: int, heads: int, causal: bool, interpret: bool) -> Callable[..., jax.Array]:
    """The splash kernel for one (length, heads) shape: its block-sparsity tables are built once
    in numpy (per shape and mode, not per layer and trace)."""
    block = next(size for size in _BLOCK_SIZES if length % size == 0)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                              block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                              block_q_dq=block, block_kv_dq=block)
    head_mask = (splash.CausalMask((length, length)) if causal
                 else splash.FullMask((length, length)))
    mask = splash.MultiHeadMask([head_mask] * heads)
    with jax.ensure_compile_time_eval():  # concrete tables, safe to keep across traces
        return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                      interpret=interpret)
