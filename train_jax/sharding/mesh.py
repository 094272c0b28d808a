"""Device mesh with axes (data, fsdp, tensor) built from `MeshConfig` sizes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from jax.sharding import Mesh

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import MeshConfig
from train_jax.sharding.rules import MESH_AXES


def resolve_mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
    """Axis sizes with -1 replaced by the remaining devices; their product must be `num_devices`."""
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ConfigError(f"mesh sizes {dict(zip(MESH_AXES, sizes))} do not divide the "
                              f"{num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices "
                          f"but {num_devices} are available; set mesh.data/fsdp/tensor so the "
                          f"product is {num_devices} (or use -1 for one of them)")
    return sizes[0], sizes[1], sizes[2]


def build_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all devices of all processes)."""
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(cfg, len(devices))
    # Auto axes: XLA propagates shardings from the annotated params, batch and constraints.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                         devices=devices)
