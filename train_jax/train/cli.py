"""`jaxtune train --config configs/train/NAME.yaml [key=value ...]`."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `jaxtune train`."""
    parser.add_argument("--config", required=True, help="YAML run config (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. model=DIR run_dir=runs/x train.steps=50 "
                             "mesh.fsdp=2 optimizer.learning_rate=3e-5")


def run(args: argparse.Namespace) -> int:
    """Train (or resume) the run; exit code 0 when finished, 128+signal when interrupted."""
    from train_jax.config.run_config import load_run_config
    from train_jax.distributed import initialize

    if not getattr(args, "debug", False):
        logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it renames
    cfg = load_run_config(args.config, args.overrides)
    if getattr(args, "_whole_process", False):
        from train_jax.train.host_memory import reexec_with_allocator

        reexec_with_allocator(cfg.train.host_allocator)  # returns when nothing would change
    initialize(cfg.distributed)  # before anything touches a JAX backend
    from train_jax.train.stages import run_stages

    result = run_stages(cfg)
    if result.interrupted_by is not None:
        print(f"interrupted at step {result.final_step}; checkpoint saved in "
              f"{cfg.run_dir}; re-run the same command to resume")
    else:
        loss = "" if result.last_loss is None else f", last loss {result.last_loss:.4f}"
        print(f"trained to step {result.final_step}{loss}; run directory {cfg.run_dir}")
    return result.exit_code
