"""Logical axis names, defined once. The model names only these; `train_jax.sharding` maps
them to mesh axes in one table.

Kernels are 2-D (in, out) as in Hugging Face checkpoints; `heads` and `kv_heads` name the
merged (num_heads * head_dim) output dimension of the q and k/v projections, so sharding it
over `tensor` splits whole heads whenever the head count divides the tensor size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import jax

LogicalAxes = tuple[str | None, ...]

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


def constrain(x: jax.Array, logical_axes: LogicalAxes) -> jax.Array:
    """Apply the active activation-sharding constraint, if any (a no-op outside a mesh)."""
    fn = _CONSTRAINT.get()
    return x if fn is None else fn(x, logical_axes)


@contextmanager
def activation_constraints(fn: ActivationConstraint) -> Iterator[None]:
    """Within this context (while tracing), `constrain` calls `fn`; set by the sharding module."""
    token = _CONSTRAINT.set(fn)
    try:
        yield
    finally:
        _CONSTRAINT.reset(token)
