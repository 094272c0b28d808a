"""`jaxtune plan --config CONFIG [--devices N | --target TPU_TYPE [--json]] [key=value ...]`.

Without `--target`: each parameter's partition spec and a per-device memory estimate from
shapes alone. With `--target v5p-16`: the train step compiled for that TPU slice on this host
(libtpu), its bytes per chip against HBM, FLOPs, roofline step time and MFU, and when it does
not fit, the first settings change that does. Exit status with `--target`: 0 when the run fits,
3 when it does not, 1 on an error.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from train_jax.config.run_config import RunConfig

EXIT_DOES_NOT_FIT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of `jaxtune plan`."""
    parser.add_argument("--config", required=True, help="YAML run config (configs/train/*.yaml)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--devices", type=int, default=None,
                       help="estimate for this many devices from shapes alone (default: the "
                            "devices visible here)")
    where.add_argument("--target", metavar="TPU_TYPE",
                       help="compile the train step for this TPU slice (v4-N, v5p-N, "
                            "v5litepod-N, v6e-N; e.g. v5p-16) through libtpu on this host")
    parser.add_argument("--topology", help="with --target: slice topology when the type has "
                                           "no default (v5p-384: 4x4x12)")
    parser.add_argument("--json", action="store_true",
                        help="with --target: print the plan as one JSON object")
    parser.add_argument("--no-suggest", action="store_true",
                        help="with --target: do not search for a change that fits")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")


def run(args: argparse.Namespace) -> int:
    """Print the plan of the run (per-device estimate, or compiled for `--target`)."""
    from train_jax.config.run_config import load_run_config

    target = getattr(args, "target", None)
    if target is None and (getattr(args, "json", False) or getattr(args, "topology", None)):
        raise ValueError("--json and --topology need --target (a TPU type such as v5p-16)")
    cfg = load_run_config(args.config, args.overrides)
    if target is not None:
        return _run_target(args, cfg)
    from train_jax.train.plan import build_plan, render_plan

    devices = args.devices
    if devices is None:
        import jax

        devices = jax.device_count()
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    print(render_plan(build_plan(cfg, devices), cfg))
    return 0


def _run_target(args: argparse.Namespace, cfg: RunConfig) -> int:
    from train_jax.train.target_plan import plan_target, render_report
    from train_jax.train.tpu_compile import use_host_cpu

    use_host_cpu()
    report = plan_target(cfg, args.target, args.topology, suggest=not args.no_suggest)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(render_report(report))
    return 0 if report.plan.fits else EXIT_DOES_NOT_FIT
