"""Device mesh with axes (data, fsdp, tensor) built from `MeshConfig` sizes.

The devices are this run's (`jax.devices()`) or given: the AOT plan passes the compile-only
devices of a TPU topology (`jax.experimental.topologies`), so a mesh that cannot tile a slice
fails here, naming the axis, before a slice is paid for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
from jax.sharding import Mesh

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import MeshConfig
from train_jax.sharding.rules import MESH_AXES


def resolve_mesh_shape(cfg: MeshConfig, num_devices: int, where: str = "devices"
                       ) -> tuple[int, int, int]:
    """Axis sizes with -1 replaced by the remaining devices; their product must be `num_devices`.

    `where` names the devices in messages (e.g. "chips of v5p-16").
    """
    sizes = dict(zip(MESH_AXES, [cfg.data, cfg.fsdp, cfg.tensor], strict=True))
    fixed = {name: size for name, size in sizes.items() if size != -1}
    for name, size in fixed.items():
        if num_devices % size:
            raise ConfigError(
                f"mesh sizes {sizes} do not divide the {num_devices} {where}: mesh.{name}={size} "
                f"cannot tile them ({num_devices} is not a multiple of {size}); use one of "
                f"{_divisors(num_devices)}")
    product = math.prod(fixed.values())
    if len(fixed) < len(sizes):
        if num_devices % product:
            named = " x ".join(f"mesh.{n}={s}" for n, s in fixed.items() if s > 1)
            raise ConfigError(f"mesh sizes {sizes} do not divide the {num_devices} {where}: "
                              f"{named} = {product} is not a divisor of {num_devices}")
        rest = next(name for name, size in sizes.items() if size == -1)
        sizes[rest] = num_devices // product
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(f"mesh {sizes} needs {math.prod(sizes.values())} devices but "
                          f"{num_devices} are available ({where}); set mesh.data/fsdp/tensor so "
                          f"the product is {num_devices} (or use -1 for one of them)")
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def build_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None,
               where: str = "devices") -> Mesh:
    """A mesh over `devices` (default: all devices of all processes).

    On a TPU the axes are laid onto the physical torus; an axis that would have to split a
    physical dimension raises `ConfigError` naming it.
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(cfg, len(devices), where)
    try:
        # Auto axes: XLA propagates shardings from the annotated params, batch and constraints.
        return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3,
                             devices=devices)
    except (ValueError, NotImplementedError, AssertionError) as exc:
        raise ConfigError(_layout_error(shape, devices, where, exc)) from None


def _layout_error(shape: tuple[int, ...], devices: Sequence[jax.Device], where: str,
                  exc: Exception) -> str:
    sizes = dict(zip(MESH_AXES, shape, strict=True))
    head = f"mesh {sizes} cannot be laid out on the {len(devices)} {where}"
    coords = [getattr(d, "coords", None) for d in devices]
    if any(c is None for c in coords):
        return f"{head}: {str(exc).splitlines()[0]}"
    sides = [max(c[i] for c in coords) + 1 for i in range(len(coords[0]))]
    grid = "x".join(map(str, sides))
    # jax lays the axes onto the torus in order, each over whole sides (splitting a side would
    # break the rings collectives use); it names the first axis it could not place.
    failed = re.search(r"logical_axis_index (\d+) of size (\d+)", str(exc))
    axis = (f"mesh.{MESH_AXES[int(failed[1])]}={failed[2]} cannot be made of whole sides of "
            f"the {grid} chip grid once the axes before it have theirs" if failed else
            f"the axes cannot be made of whole sides of the {grid} chip grid")
    return f"{head}: {axis}; give each axis a product of sides ({', '.join(map(str, sides))})"
