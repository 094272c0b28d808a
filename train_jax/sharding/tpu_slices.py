"""Cloud TPU slices: accelerator type -> chips, hosts and topology; the facts of each chip.

An accelerator type is ``<generation>-<N>``. What N counts differs by generation:

* ``v4-N`` and ``v5p-N``: N is the number of TensorCores; each chip has 2 (megacore), so
  chips = N / 2, and every TPU VM host drives 4 chips (v4-8 and v5p-8 are one host,
  v5p-16 is 8 chips on 2 hosts).
* ``v5litepod-N`` (v5e) and ``v6e-N`` (Trillium): N is the number of chips, one TensorCore
  each. Slices of 1, 4 and 8 chips are a single host; larger slices have 4 chips per host
  (v5litepod-16 and v6e-16 are 4 hosts).

Hosts = processes of a `jaxtune train` run (one JAX process per host). A `TpuSlice` also
knows the arguments `jax.experimental.topologies.get_topology_desc` needs to make its devices
on a host without TPUs (libtpu names v5e "v5e", and v4 chips are megacore only when asked).

Per chip (Google's published figures; HBM in GiB, which is what a chip reports):

| gen | HBM | bf16 peak | HBM bandwidth | source |
|---|---|---|---|---|
| v4 | 32 GiB | 275 TFLOP/s | 1200 GB/s | https://cloud.google.com/tpu/docs/v4 |
| v5e | 16 GiB | 197 TFLOP/s | 819 GB/s | https://cloud.google.com/tpu/docs/v5e |
| v5p | 95 GiB | 459 TFLOP/s | 2765 GB/s | https://cloud.google.com/tpu/docs/v5p |
| v6e | 32 GiB | 918 TFLOP/s | 1640 GB/s | https://cloud.google.com/tpu/docs/v6e |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

GIB = 1 << 30


class TpuTypeError(ValueError):
    """The accelerator type or topology is not a valid Cloud TPU slice."""


@dataclass(frozen=True)
class Generation:
    """One TPU generation: how its slices are named and laid out, and what one chip offers."""

    name: str  # prefix of the accelerator type, e.g. "v5p"
    cores_per_chip: int  # what N in "<name>-N" counts is chips * cores_per_chip
    chips_per_host: int  # on multi-host slices
    single_host_chips: tuple[int, ...]  # slice sizes (in chips) that fit on one host
    valid_chips: tuple[int, ...] | None  # allowed slice sizes; None: any multiple of 64 up to max
    max_chips: int
    topology_dims: int  # 3 for the 3D torus generations, 2 otherwise
    libtpu_name: str  # generation in libtpu's topology names ("v5e:4x4")
    hbm_bytes: int  # per chip
    peak_bf16_flops: float  # per chip, FLOP/s
    hbm_bandwidth: float  # per chip, bytes/s
    source: str  # where the per-chip figures are published


GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation("v4", 2, 4, (4,), None, 4096, 3, "v4", 32 * GIB, 275e12, 1200e9,
                   "https://cloud.google.com/tpu/docs/v4"),
        Generation("v5p", 2, 4, (4,), None, 8960, 3, "v5p", 95 * GIB, 459e12, 2765e9,
                   "https://cloud.google.com/tpu/docs/v5p"),
        Generation("v5litepod", 1, 4, (1, 4, 8), (1, 4, 8, 16, 32, 64, 128, 256), 256, 2, "v5e",
                   16 * GIB, 197e12, 819e9, "https://cloud.google.com/tpu/docs/v5e"),
        Generation("v6e", 1, 4, (1, 4, 8), (1, 4, 8, 16, 32, 64, 128, 256), 256, 2, "v6e",
                   32 * GIB, 918e12, 1640e9, "https://cloud.google.com/tpu/docs/v6e"),
    )
}

# Default topologies (chips -> shape) for the sizes whose shape is unambiguous in practice.
# Other v4/v5p sizes (e.g. v5p-384 = 4x4x12) need an explicit topology.
_TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
                256: "16x16"}
_TOPOLOGY_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
                256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}

_SMALL_3D_CHIPS = (4, 8, 16, 32)
_TYPE_RE = re.compile(r"^(?P<gen>[a-z0-9]+)-(?P<n>\d+)$")
_FULL_2D_SIDE = 16  # a 2D pod side that wraps around (v5e/v6e pods are 16x16)
_2D_SINGLE_HOST = {1: (1, 1), 4: (2, 2), 8: (2, 4)}


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

    @property
    def topology_name(self) -> str:
        """libtpu's name of the slice's topology, e.g. ``v5p:2x2x2`` or ``v5e:4x4``."""
        return f"{self.generation.libtpu_name}:{self.topology}"

    def topology_options(self) -> dict[str, Any]:
        """Keyword arguments of `get_topology_desc` besides the name: host layout, wrap-around
        links, and megacore chips (one device per chip, as on the real slice)."""
        dims = [int(d) for d in self.topology.split("x")]
        if self.generation.topology_dims == 3:
            # Slices with every side a multiple of 4 are whole cubes joined as a torus.
            wrap = (all(d % 4 == 0 for d in dims),) * 3
            host_bounds = (2, 2, 1)
        else:
            wrap = (*(d == _FULL_2D_SIDE for d in dims), False)
            # One host drives the whole of a 1-, 4- or 8-chip slice; bigger ones have 2x2 per host.
            host_bounds = (2, 2, 1) if self.multi_host else (*_2D_SINGLE_HOST[self.chips], 1)
        options: dict[str, Any] = {"chips_per_host_bounds": host_bounds, "wrap": wrap,
                                   "num_slices": 1}
        if self.generation.cores_per_chip == 2:
            options["chip_config_name"] = "megacore"
        return options


def known_tpu_types() -> str:
    """The accelerator types this module knows, for error messages."""
    parts = []
    for gen in GENERATIONS.values():
        c = gen.cores_per_chip
        if gen.valid_chips is not None:
            sizes = ", ".join(f"{gen.name}-{n * c}" for n in gen.valid_chips)
        else:
            small = ", ".join(f"{gen.name}-{n * c}" for n in _SMALL_3D_CHIPS)
            sizes = (f"{small}, then multiples of {gen.name}-{64 * c} up to "
                     f"{gen.name}-{gen.max_chips * c}")
        parts.append(sizes)
    return "; ".join(parts)


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
                           f"supported are {known} ({known_tpu_types()})")
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
