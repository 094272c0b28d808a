"""`jaxtune train`: the training core's command, with the rollout engines of this layer
registered first (`objective.grpo.rollout: vllm`), since the core imports no serving stack."""

from __future__ import annotations

import argparse
import importlib.util

from train_jax.train import cli as core


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `jaxtune train` (the core's)."""
    core.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Register the engines that are installed, then train as the core does."""
    if importlib.util.find_spec("vllm") is not None:
        from infra.rollout.vllm_rollout import register

        register()
    return core.run(args)
