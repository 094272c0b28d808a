"""Cloud TPU accelerator types: chips, hosts, topology and GKE labels per generation.

An accelerator type is ``<generation>-<N>``. What N counts differs by generation:

* ``v4-N`` and ``v5p-N``: N is the number of TensorCores; each chip has 2 (megacore), so
  chips = N / 2, and every TPU VM host drives 4 chips (v4-8 and v5p-8 are one host,
  v5p-16 is 8 chips on 2 hosts).
* ``v5litepod-N`` (v5e) and ``v6e-N`` (Trillium): N is the number of chips, one TensorCore
  each. Slices of 1, 4 and 8 chips are a single host; larger slices have 4 chips per host
  (v5litepod-16 and v6e-16 are 4 hosts).

Hosts = processes of a `jaxtune train` run (one JAX process per host).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass


class TpuTypeError(ValueError):
    """The accelerator type or topology is not a valid Cloud TPU slice."""


@dataclass(frozen=True)
class Generation:
    """Facts about one TPU generation that the launchers need."""

    name: str  # prefix of the accelerator type, e.g. "v5p"
    cores_per_chip: int  # what N in "<name>-N" counts is chips * cores_per_chip
    chips_per_host: int  # on multi-host slices
    single_host_chips: tuple[int, ...]  # slice sizes (in chips) that fit on one host
    valid_chips: tuple[int, ...] | None  # allowed slice sizes; None: any multiple of 4 up to max
    max_chips: int
    topology_dims: int  # 3 for the 3D torus generations, 2 otherwise
    runtime_version: str  # default TPU VM software version (gcloud --version)
    gke_accelerator: str  # node label cloud.google.com/gke-tpu-accelerator


GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation("v4", 2, 4, (4,), None, 4096, 3, "tpu-ubuntu2204-base", "tpu-v4-podslice"),
        Generation("v5p", 2, 4, (4,), None, 8960, 3, "v2-alpha-tpuv5", "tpu-v5p-slice"),
        Generation("v5litepod", 1, 4, (1, 4, 8), (1, 4, 8, 16, 32, 64, 128, 256), 256, 2,
                   "v2-alpha-tpuv5-lite", "tpu-v5-lite-podslice"),
        Generation("v6e", 1, 4, (1, 4, 8), (1, 4, 8, 16, 32, 64, 128, 256), 256, 2,
                   "v2-alpha-tpuv6e", "tpu-v6e-slice"),
    )
}

# Default topologies (chips -> shape) for the sizes whose shape is unambiguous in practice.
# Other v4/v5p sizes (e.g. v5p-384 = 4x4x12) need an explicit --topology.
_TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
                256: "16x16"}
_TOPOLOGY_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
                256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}

_SMALL_3D_CHIPS = (4, 8, 16, 32)
_TYPE_RE = re.compile(r"^(?P<gen>[a-z0-9]+)-(?P<n>\d+)$")


@dataclass(frozen=True)
class TpuSlice:
    """A validated accelerator type such as ``v5p-16``."""

    accelerator_type: str
    generation: Generation
    chips: int
    hosts: int
    chips_per_host: int
    topology: str

    @property
    def multi_host(self) -> bool:
        """True when the slice spans several TPU VM hosts (and so several JAX processes)."""
        return self.hosts > 1


def parse_tpu_type(accelerator_type: str, topology: str | None = None) -> TpuSlice:
    """Validate ``accelerator_type`` (and an optional explicit ``topology``) into a `TpuSlice`."""
    known = ", ".join(f"{g}-N" for g in GENERATIONS)
    match = _TYPE_RE.match(accelerator_type.strip().lower())
    if not match:
        raise TpuTypeError(
            f"invalid TPU type {accelerator_type!r}: expected <generation>-<N>, one of {known}"
        )
    gen_name, count = match["gen"], int(match["n"])
    if gen_name in ("v5e", "v5lite"):
        raise TpuTypeError(f"invalid TPU type {accelerator_type!r}: v5e slices are named "
                           f"v5litepod-N (N = chips), e.g. v5litepod-16")
    gen = GENERATIONS.get(gen_name)
    if gen is None:
        raise TpuTypeError(f"unsupported TPU generation {gen_name!r} in {accelerator_type!r}: "
                           f"supported are {known}")
    if count % gen.cores_per_chip:
        raise TpuTypeError(f"invalid TPU type {accelerator_type!r}: N counts TensorCores "
                           f"({gen.cores_per_chip} per chip) and must be even")
    chips = count // gen.cores_per_chip
    if gen.valid_chips is not None:
        if chips not in gen.valid_chips:
            sizes = ", ".join(f"{gen.name}-{c * gen.cores_per_chip}" for c in gen.valid_chips)
            raise TpuTypeError(f"invalid TPU type {accelerator_type!r}: valid sizes are {sizes}")
    elif chips not in _SMALL_3D_CHIPS and (chips % 64 or not 0 < chips <= gen.max_chips):
        # 3D slices: 2x2x1, 2x2x2, 2x2x4, 2x4x4, then every dimension a multiple of 4.
        c = gen.cores_per_chip
        raise TpuTypeError(
            f"invalid TPU type {accelerator_type!r}: {gen.name} sizes are "
            f"{', '.join(f'{gen.name}-{n * c}' for n in _SMALL_3D_CHIPS)} and multiples of "
            f"{gen.name}-{64 * c} up to {gen.name}-{gen.max_chips * c}"
        )
    if chips in gen.single_host_chips:
        hosts, per_host = 1, chips
    else:
        hosts, per_host = chips // gen.chips_per_host, gen.chips_per_host
    return TpuSlice(
        accelerator_type=f"{gen.name}-{count}",
        generation=gen,
        chips=chips,
        hosts=hosts,
        chips_per_host=per_host,
        topology=_topology(gen, chips, topology, accelerator_type),
    )


def _topology(gen: Generation, chips: int, topology: str | None, name: str) -> str:
    if topology is None:
        table = _TOPOLOGY_3D if gen.topology_dims == 3 else _TOPOLOGY_2D
        if chips not in table:
            raise TpuTypeError(f"no default topology for {name} ({chips} chips): pass "
                               f"--topology AxBxC whose product is {chips}")
        return table[chips]
    try:
        dims = [int(d) for d in topology.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) != gen.topology_dims or min(dims, default=0) < 1:
        example = "4x4x8" if gen.topology_dims == 3 else "4x8"
        raise TpuTypeError(f"invalid topology {topology!r} for {gen.name}: expected "
                           f"{gen.topology_dims} dimensions like {example}")
    if gen.topology_dims == 3 and not (
            sorted(dims) in ([1, 2, 2], [2, 2, 2], [2, 2, 4], [2, 4, 4])
            or all(d % 4 == 0 for d in dims)):
        raise TpuTypeError(f"invalid topology {topology!r} for {gen.name}: use 2x2x1, 2x2x2, "
                           "2x2x4, 2x4x4 or dimensions that are all multiples of 4")
    if math.prod(dims) != chips:
        raise TpuTypeError(f"topology {topology!r} has {math.prod(dims)} chips but {name} has "
                           f"{chips}")
    return "x".join(str(d) for d in dims)
