"""NamedShardings for parameter trees, batches and activation constraints on a mesh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from train_jax.model import axes
from train_jax.sharding.rules import logical_to_spec

# Batches arrive as (micro_batches, rows, length): rows are split over the batch mesh axes.
BATCH_AXES: axes.LogicalAxes = (None, axes.BATCH, axes.LENGTH)


def variable_logical_axes(var: nnx.Variable) -> axes.LogicalAxes:
    """The logical axes stored on a model variable (replicated when it has none, e.g. RNG)."""
    logical = var.get_metadata().get("logical_axes")
    if logical is None:
        return (None,) * len(var.get_value().shape)
    return tuple(logical)


def state_specs(state: nnx.State, mesh: Mesh) -> Any:
    """A pure nested dict of PartitionSpecs matching `state.to_pure_dict()`."""
    def spec(var: nnx.Variable) -> PartitionSpec:
        value = var.get_value()
        return logical_to_spec(variable_logical_axes(var), value.shape, mesh)

    specs = jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return specs.to_pure_dict()


def named(mesh: Mesh, specs: Any) -> Any:
    """PartitionSpec tree -> NamedSharding tree."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, shape: tuple[int, ...]) -> NamedSharding:
    """Sharding of one (micro_batches, rows, length) batch array."""
    return NamedSharding(mesh, logical_to_spec(BATCH_AXES, shape, mesh))


def activation_constraint(mesh: Mesh) -> Callable[[jax.Array, axes.LogicalAxes], jax.Array]:
    """The function `axes.constrain` calls while tracing under `use_mesh_constraints`."""
    def constrain(x: jax.Array, logical: axes.LogicalAxes) -> jax.Array:
        spec = logical_to_spec(logical, x.shape, mesh)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
    return constrain


@contextmanager
def use_mesh_constraints(mesh: Mesh) -> Iterator[None]:
    """Activation sharding constraints for the model code traced inside this context."""
    with axes.activation_constraints(activation_constraint(mesh)):
        yield
