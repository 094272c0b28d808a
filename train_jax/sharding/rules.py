"""The ONE table mapping logical axis names (from `train_jax.model.axes`) to mesh axes.

Parameters: embeddings and kernels are sharded over `fsdp` on their embed dimension and over
`tensor` on their heads / mlp / vocab dimension (Megatron-style column/row split). Activations:
the batch is split over `data` and `fsdp`; head, mlp and vocab dimensions over `tensor`.
A dimension whose size the mesh axes do not divide stays replicated (e.g. one KV head on a
tensor axis of 2): correct everywhere, just less sharded. A logical name missing from the
table raises `UnmappedAxisError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jax.sharding import Mesh, PartitionSpec

from train_jax.model import axes

logger = logging.getLogger(__name__)

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
MESH_AXES: tuple[str, ...] = (DATA, FSDP, TENSOR)
MeshAxes = str | tuple[str, ...] | None

LOGICAL_TO_MESH: dict[str, MeshAxes] = {
    # parameters
    axes.VOCAB: TENSOR,
    axes.EMBED: FSDP,
    axes.HEADS: TENSOR,
    axes.KV_HEADS: TENSOR,
    axes.MLP: TENSOR,
    axes.NORM: None,
    axes.LORA_RANK: None,
    # activations
    axes.BATCH: (DATA, FSDP),
    axes.LENGTH: None,
    axes.HEAD_DIM: None,
    axes.ACT_HEADS: TENSOR,
    axes.ACT_KV_HEADS: TENSOR,
    axes.ACT_EMBED: None,
    axes.ACT_MLP: TENSOR,
    axes.ACT_VOCAB: TENSOR,
}


class UnmappedAxisError(KeyError):
    """A logical axis name has no entry in the sharding table."""


def mesh_axes_for(logical: str | None) -> MeshAxes:
    """The mesh axes of one logical axis name (None for a replicated dimension)."""
    if logical is None:
        return None
    if logical not in LOGICAL_TO_MESH:
        raise UnmappedAxisError(
            f"logical axis {logical!r} has no mesh mapping; add it to "
            f"train_jax.sharding.rules.LOGICAL_TO_MESH (known: {', '.join(LOGICAL_TO_MESH)})")
    return LOGICAL_TO_MESH[logical]


def _axis_size(mesh: Mesh, mesh_axes: MeshAxes) -> int:
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    size = 1
    for name in names:
        size *= mesh.shape[name]
    return size


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for an array with these logical axes.

    With `shape` and `mesh`, a dimension the mapped mesh axes do not divide evenly is left
    replicated, and a mesh axis of size 1 is dropped (so specs read the same on any mesh).
    """
    if shape is not None and len(shape) != len(logical_axes):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    entries: list[MeshAxes] = []
    for dim, logical in enumerate(logical_axes):
        mapped = mesh_axes_for(logical)
        if mesh is not None and mapped is not None:
            names = (mapped,) if isinstance(mapped, str) else mapped
            kept = tuple(n for n in names if mesh.shape[n] > 1)
            mapped = None if not kept else kept[0] if len(kept) == 1 else kept
            if mapped is not None and shape is not None and shape[dim] % _axis_size(mesh, mapped):
                logger.debug("dim %d (%s, size %d) not divisible by %s: replicated",
                             dim, logical, shape[dim], mapped)
                mapped = None
        entries.append(mapped)
    return PartitionSpec(*entries)
