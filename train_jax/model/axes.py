"""Logical axis names, defined once. The model names only these; `train_jax.sharding` maps
them to mesh axes in one table.

Kernels are 2-D (in, out) as in Hugging Face checkpoints; `heads` and `kv_heads` name the
merged (num_heads * head_dim) output dimension of the q and k/v projections, so sharding it
over `tensor` splits whole heads whenever the head count divides the tensor size.

The sharding module acts on the model through two hooks set while tracing: `constrain`
(activation sharding constraints) and `per_shard` (a kernel run on each device's shard, for
kernels XLA cannot partition, such as the TPU attention). Outside a mesh both do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TypeVar

import jax

LogicalAxes = tuple[str | None, ...]
T = TypeVar("T")

# Parameter axes.
VOCAB = "vocab"
EMBED = "embed"
HEADS = "heads"
KV_HEADS = "kv_heads"
MLP = "mlp"
NORM = "norm"
LORA_RANK = "lora_rank"
# Activation axes.
BATCH = "batch"
LENGTH = "length"
HEAD_DIM = "head_dim"
ACT_HEADS = "act_heads"
ACT_KV_HEADS = "act_kv_heads"
ACT_EMBED = "act_embed"
ACT_MLP = "act_mlp"
ACT_VOCAB = "act_vocab"

ALL_AXES: tuple[str, ...] = (
    VOCAB, EMBED, HEADS, KV_HEADS, MLP, NORM, LORA_RANK,
    BATCH, LENGTH, HEAD_DIM, ACT_HEADS, ACT_KV_HEADS, ACT_EMBED, ACT_MLP, ACT_VOCAB,
)

# Activation shapes used by the model (names carry the shape, as in the flax gemma example).
ACT_BTD: LogicalAxes = (BATCH, LENGTH, ACT_EMBED)
ACT_BTF: LogicalAxes = (BATCH, LENGTH, ACT_MLP)
ACT_BTNH: LogicalAxes = (BATCH, LENGTH, ACT_HEADS, HEAD_DIM)
ACT_BTKH: LogicalAxes = (BATCH, LENGTH, ACT_KV_HEADS, HEAD_DIM)
ACT_BTV: LogicalAxes = (BATCH, LENGTH, ACT_VOCAB)

ActivationConstraint = Callable[[jax.Array, LogicalAxes], jax.Array]
_CONSTRAINT: ContextVar[ActivationConstraint | None] = ContextVar("activation_constraint", default=None)
# (fn, args, logical axes of each arg, logical axes of the result) -> fn applied shard by shard.
PerShardMap = Callable[[Callable[..., jax.Array], tuple[jax.Array, ...], tuple[LogicalAxes, ...],
                        LogicalAxes], jax.Array]
_PER_SHARD: ContextVar[PerShardMap | None] = ContextVar("per_shard_map", default=None)


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
    """Apply the active activation-sharding constraint, if any (a no-op outside a mesh)."""
    fn = _CONSTRAINT.get()
    return x if fn is None else fn(x, logical_axes)


@contextmanager
def bound(var: ContextVar[T], value: T) -> Iterator[None]:
    """`var` set to `value` within this context."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def activation_constraints(fn: ActivationConstraint) -> AbstractContextManager[None]:
    """Within this context (while tracing), `constrain` calls `fn`; set by the sharding module."""
    return bound(_CONSTRAINT, fn)


def per_shard(fn: Callable[..., jax.Array], args: tuple[jax.Array, ...],
              in_axes: tuple[LogicalAxes, ...], out_axes: LogicalAxes) -> jax.Array:
    """`fn(*args)`, run on each device's shard of `args` (split as their logical axes say) when a
    per-shard map is active: for kernels XLA cannot partition (a Mosaic call). `fn` must give
    the same result on the shards as on the whole arrays. Without a mesh: `fn(*args)`."""
    run = _PER_SHARD.get()
    return fn(*args) if run is None else run(fn, args, in_axes, out_axes)


def has_per_shard_map() -> bool:
    """Whether `per_shard` splits its arguments over a mesh (set by the sharding module)."""
    return _PER_SHARD.get() is not None


def per_shard_map(fn: PerShardMap) -> AbstractContextManager[None]:
    """Within this context (while tracing), `per_shard` calls `fn` (e.g. a `jax.shard_map`)."""
    return bound(_PER_SHARD, fn)
