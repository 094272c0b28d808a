"""Cloud TPU accelerator types for the launchers: the slice itself plus what provisioning needs.

What a type means (chips, hosts, topology, the chip's HBM and peak) lives in
`train_jax.sharding.tpu_slices`, which the AOT plan uses too; this module adds the facts only
the launchers need per generation: the TPU VM software version and the GKE node label.
"""

from __future__ import annotations

from dataclasses import dataclass

from train_jax.sharding.tpu_slices import TpuSlice, TpuTypeError, parse_tpu_type

__all__ = ["LAUNCH_FACTS", "LaunchFacts", "TpuSlice", "TpuTypeError", "launch_facts",
           "parse_tpu_type"]


@dataclass(frozen=True)
class LaunchFacts:
    """Provisioning facts of one TPU generation."""

    runtime_version: str  # default TPU VM software version (gcloud --version)
    gke_accelerator: str  # node label cloud.google.com/gke-tpu-accelerator


# Keyed like `tpu_slices.GENERATIONS` (a test checks that every generation has an entry).
LAUNCH_FACTS: dict[str, LaunchFacts] = {
    "v4": LaunchFacts("tpu-ubuntu2204-base", "tpu-v4-podslice"),
    "v5p": LaunchFacts("v2-alpha-tpuv5", "tpu-v5p-slice"),
    "v5litepod": LaunchFacts("v2-alpha-tpuv5-lite", "tpu-v5-lite-podslice"),
    "v6e": LaunchFacts("v2-alpha-tpuv6e", "tpu-v6e-slice"),
}


def launch_facts(tpu: TpuSlice) -> LaunchFacts:
    """The provisioning facts of `tpu`'s generation."""
    return LAUNCH_FACTS[tpu.generation.name]
