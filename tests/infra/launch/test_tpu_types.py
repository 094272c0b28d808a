"""Accelerator types -> chips, hosts, topology (facts from the Cloud TPU system docs)."""

import pytest

from infra.launch.tpu_types import LAUNCH_FACTS, TpuTypeError, launch_facts, parse_tpu_type
from train_jax.sharding.tpu_slices import GENERATIONS


@pytest.mark.parametrize(
    ("name", "chips", "hosts", "per_host", "topology", "gke_label"),
    [
        ("v4-8", 4, 1, 4, "2x2x1", "tpu-v4-podslice"),
        ("v4-32", 16, 4, 4, "2x2x4", "tpu-v4-podslice"),
        ("v5p-8", 4, 1, 4, "2x2x1", "tpu-v5p-slice"),
        ("v5p-16", 8, 2, 4, "2x2x2", "tpu-v5p-slice"),
        ("v5p-128", 64, 16, 4, "4x4x4", "tpu-v5p-slice"),
        ("v5litepod-1", 1, 1, 1, "1x1", "tpu-v5-lite-podslice"),
        ("v5litepod-8", 8, 1, 8, "2x4", "tpu-v5-lite-podslice"),
        ("v5litepod-16", 16, 4, 4, "4x4", "tpu-v5-lite-podslice"),
        ("v5litepod-256", 256, 64, 4, "16x16", "tpu-v5-lite-podslice"),
        ("v6e-4", 4, 1, 4, "2x2", "tpu-v6e-slice"),
        ("v6e-32", 32, 8, 4, "4x8", "tpu-v6e-slice"),
    ],
)
def test_known_slices(name, chips, hosts, per_host, topology, gke_label):
    tpu = parse_tpu_type(name)
    assert (tpu.chips, tpu.hosts, tpu.chips_per_host, tpu.topology) == (
        chips, hosts, per_host, topology)
    assert launch_facts(tpu).gke_accelerator == gke_label
    assert tpu.multi_host == (hosts > 1)
    assert tpu.hosts * tpu.chips_per_host == tpu.chips


def test_every_generation_has_launch_facts():
    assert LAUNCH_FACTS.keys() == GENERATIONS.keys()


@pytest.mark.parametrize(
    ("name", "libtpu_name", "options"),
    [
        ("v4-8", "v4:2x2x1", {"chips_per_host_bounds": (2, 2, 1), "wrap": (False,) * 3,
                              "chip_config_name": "megacore"}),
        ("v5p-128", "v5p:4x4x4", {"chips_per_host_bounds": (2, 2, 1), "wrap": (True,) * 3}),
        ("v5litepod-1", "v5e:1x1", {"chips_per_host_bounds": (1, 1, 1)}),
        ("v5litepod-8", "v5e:2x4", {"chips_per_host_bounds": (2, 4, 1)}),
        ("v6e-256", "v6e:16x16", {"chips_per_host_bounds": (2, 2, 1),
                                  "wrap": (True, True, False)}),
    ],
)
def test_libtpu_topology_arguments(name, libtpu_name, options):
    tpu = parse_tpu_type(name)
    assert tpu.topology_name == libtpu_name
    assert options.items() <= tpu.topology_options().items()


def test_explicit_topology_for_sizes_without_default():
    with pytest.raises(TpuTypeError, match="no default topology for v5p-384"):
        parse_tpu_type("v5p-384")
    tpu = parse_tpu_type("v5p-384", "4x4x12")
    assert (tpu.chips, tpu.hosts, tpu.topology) == (192, 48, "4x4x12")


@pytest.mark.parametrize(
    ("name", "topology", "message"),
    [
        ("v5p-12", None, "v5p sizes are v5p-8, v5p-16, v5p-32, v5p-64 and multiples of v5p-128"),
        ("v5p-24", None, "v5p sizes are"),
        ("v5p-136", None, "multiples of v5p-128"),
        ("v5p-384", "2x2x48", "dimensions that are all multiples of 4"),
        ("v5p-17", None, "must be even"),
        ("v4-16384", None, "up to v4-8192"),
        ("v5litepod-12", None, "valid sizes are v5litepod-1, v5litepod-4"),
        ("v6e-2", None, "valid sizes are"),
        ("v5e-16", None, "named v5litepod-N"),
        ("v7-8", None, "unsupported TPU generation 'v7'"),
        ("v5p", None, "expected <generation>-<N>"),
        ("v5p-16", "2x2", "expected 3 dimensions"),
        ("v5p-16", "2x2x4", "has 16 chips but v5p-16 has 8"),
        ("v6e-16", "4xfour", "expected 2 dimensions"),
    ],
)
def test_invalid_types_say_what_is_wrong(name, topology, message):
    with pytest.raises(TpuTypeError, match=message):
        parse_tpu_type(name, topology)
