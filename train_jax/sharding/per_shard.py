"""`axes.per_shard` on a mesh: run a kernel XLA cannot partition on each device's shard.

A Mosaic kernel (the TPU splash attention) is one custom call that XLA's SPMD partitioner
cannot split, so on several chips the model hands it to `axes.per_shard`; within
`per_shard_mapping(mesh)` that becomes a `jax.shard_map` whose in/out specs come from the
arguments' logical axes through the one table in `rules.py` (dimensions the mesh does not
divide stay whole on every shard).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import jax
from jax.sharding import Mesh

from train_jax.model import axes
from train_jax.sharding.rules import logical_to_spec


def shard_map_over(mesh: Mesh) -> axes.PerShardMap:
    """The per-shard map of `mesh`: `fn` under `jax.shard_map` with specs from logical axes."""
    def run(fn: Callable[..., jax.Array], args: tuple[jax.Array, ...],
            in_axes: tuple[axes.LogicalAxes, ...], out_axes: axes.LogicalAxes) -> jax.Array:
        in_specs = tuple(logical_to_spec(a, x.shape, mesh) for a, x in zip(in_axes, args,
                                                                            strict=True))
        # The output is split like the argument with the same logical axes (e.g. q for the
        # attention output), so a dimension left whole there stays whole here too.
        like: Any = next((x.shape for x, a in zip(args, in_axes, strict=True)
                          if tuple(a) == tuple(out_axes)), None)
        out_spec = logical_to_spec(out_axes, like, mesh)
        mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_spec,
                               check_vma=False)
        return mapped(*args)

    return run


def per_shard_mapping(mesh: Mesh) -> AbstractContextManager[None]:
    """Within this context (while tracing), `axes.per_shard` runs shard by shard on `mesh`."""
    return axes.per_shard_map(shard_map_over(mesh))
