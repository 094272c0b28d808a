"""The logical-axis table and mesh construction."""

from __future__ import annotations

import jax
import pytest
from jax.sharding import PartitionSpec as P

from train_jax.config import ConfigError, MeshConfig
from train_jax.model import axes
from train_jax.sharding.mesh import build_mesh, resolve_mesh_shape
from train_jax.sharding.rules import LOGICAL_TO_MESH, UnmappedAxisError, logical_to_spec


def test_every_model_axis_is_mapped():
    assert set(axes.ALL_AXES) <= set(LOGICAL_TO_MESH)


def test_unmapped_axis_raises():
    with pytest.raises(UnmappedAxisError, match="'experts' has no mesh mapping"):
        logical_to_spec(("experts", axes.EMBED))


def test_specs_on_a_mesh():
    mesh = build_mesh(MeshConfig(data=2, fsdp=2, tensor=2), jax.devices()[:8])
    assert logical_to_spec((axes.EMBED, axes.HEADS), (64, 64), mesh) == P("fsdp", "tensor")
    # One KV head of 16 cannot be split over tensor=2 by heads, but 16 columns can.
    assert logical_to_spec((axes.EMBED, axes.KV_HEADS), (64, 16), mesh) == P("fsdp", "tensor")
    # A dimension the axis does not divide stays replicated.
    assert logical_to_spec((axes.EMBED, axes.KV_HEADS), (64, 3), mesh) == P("fsdp", None)
    assert logical_to_spec(axes.ACT_BTD, (8, 16, 64), mesh) == P(("data", "fsdp"), None, None)
    # Axes of size 1 disappear, so a one-device plan is fully replicated.
    single = build_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
    assert logical_to_spec((axes.EMBED, axes.HEADS), (64, 64), single) == P(None, None)


def test_mesh_shape_resolution():
    assert resolve_mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
    assert resolve_mesh_shape(MeshConfig(data=-1, fsdp=1, tensor=1), 8) == (8, 1, 1)
    with pytest.raises(ConfigError, match="needs 4 devices but 8 are available"):
        resolve_mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)
    with pytest.raises(ConfigError, match="do not divide the 8 devices"):
        resolve_mesh_shape(MeshConfig(data=3, fsdp=-1, tensor=1), 8)
    with pytest.raises(ConfigError, match="at most one"):
        MeshConfig(data=-1, fsdp=-1)
