"""`jaxtune plan --config configs/train/NAME.yaml [--devices N] [key=value ...]`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `jaxtune plan`."""
    parser.add_argument("--config", required=True, help="YAML run config (configs/train/*.yaml)")
    parser.add_argument("--devices", type=int, default=None,
                        help="plan for this many devices (default: the devices visible here), "
                             "e.g. 32 for a v5e-32 slice")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def run(args: argparse.Namespace) -> int:
    """Print each parameter's partition spec and the per-device memory estimate."""
    from train_jax.config.run_config import load_run_config
    from train_jax.train.plan import build_plan, render_plan

    cfg = load_run_config(args.config, args.overrides)
    devices = args.devices
    if devices is None:
        import jax

        devices = jax.device_count()
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    print(render_plan(build_plan(cfg, devices), cfg))
    return 0
