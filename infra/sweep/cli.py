"""`jaxtune sweep --config C --grid lr=1e-5,3e-5 train.steps=100,200 [key=value ...]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune sweep`."""
    parser.add_argument("--config", type=Path, required=True, help="training config (YAML)")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2",
                        help="values to try per key (aliases: lr, steps, epochs, batch_size, warmup, "
                             "weight_decay, lora_rank); trials are the cartesian product")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep directory")
    parser.add_argument("--metric", help="metrics.jsonl key to score trials by "
                                         "(default: the config's checkpoint.best_metric)")
    parser.add_argument("--mode", choices=("min", "max"), help="whether lower or higher is better")
    parser.add_argument("--keep-all", action="store_true",
                        help="keep every trial's checkpoints (default: only the best trial's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="overrides applied to every trial")


def run(args: argparse.Namespace) -> int:
    """Run (or continue) the sweep and print the best trial."""
    from infra.sweep.grid import parse_grid
    from infra.sweep.runner import Sweep, SweepSettings

    if not args.config.is_file():
        raise FileNotFoundError(f"config not found: {args.config}")
    settings = SweepSettings(config=args.config, out_dir=args.out,
                             trials=tuple(parse_grid(args.grid)),
                             base_overrides=tuple(args.overrides), metric=args.metric,
                             mode=args.mode, keep_all=args.keep_all)
    summary = Sweep(settings).run()
    best = summary["best"]
    print(f"best trial {best['trial']}: {summary['metric']}={best['value']:.4f} "
          f"({' '.join(f'{k}={v}' for k, v in best['overrides'].items())})")
    print(f"table: {args.out / 'sweep.md'}  plot: {args.out / 'sweep.png'}  "
          f"best checkpoint: {summary['best_checkpoint']}")
    return 0
