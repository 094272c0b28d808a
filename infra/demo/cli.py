"""`jaxtune demo`: from a base model to an evaluated, served specialist in one command."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune demo`."""
    from infra.demo.pipeline import KNOWN_BASE_MODELS, REPO_ROOT

    parser.add_argument("--out", type=Path, default=Path("runs/demo"),
                        help="demo directory; re-running continues its unfinished stages")
    parser.add_argument("--task", default="viggo", choices=("viggo", "sql", "gsm8k"))
    parser.add_argument("--base-model", default=KNOWN_BASE_MODELS[0],
                        help=f"a known name ({', '.join(KNOWN_BASE_MODELS)}) or a local HF folder")
    parser.add_argument("--config", type=Path, default=None,
                        help="training config (default configs/train/<task>.yaml)")
    parser.add_argument("--budget-minutes", type=float, default=25.0,
                        help="training time budget in minutes (default 25)")
    parser.add_argument("--eval-limit", type=int, default=200,
                        help="validation examples scored for base and tuned (default 200)")
    parser.add_argument("--shots", type=int, default=3, help="few-shot examples for the baseline")
    parser.add_argument("--latency-concurrency", default="1,4,16",
                        help="concurrency levels of the latency suite (default 1,4,16)")
    parser.add_argument("--latency-requests", type=int, default=32,
                        help="requests per concurrency level (default 32)")
    parser.add_argument("--serve-arg", action="append", default=None, metavar="ARG",
                        help="extra argument for `jaxtune serve` (repeatable)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="training config overrides, e.g. train.steps=50")
    parser.set_defaults(_repo_root=REPO_ROOT)


def run(args: argparse.Namespace) -> int:
    """Run (or continue) the demo and print where the report is."""
    from infra.demo.pipeline import DemoPipeline, DemoSettings

    config = (args.config or args._repo_root / "configs" / "train" / f"{args.task}.yaml").resolve()
    try:
        levels = tuple(int(c) for c in args.latency_concurrency.split(","))
    except ValueError:
        raise ValueError(f"--latency-concurrency must be comma-separated integers, "
                         f"got {args.latency_concurrency!r}") from None
    defaults = DemoSettings.__dataclass_fields__["serve_args"].default
    settings = DemoSettings(
        out_dir=args.out.resolve(), task=args.task, train_config=config,
        base_model=str(Path(args.base_model).resolve()) if Path(args.base_model).exists()
        else args.base_model,
        train_overrides=tuple(args.overrides), budget_minutes=args.budget_minutes,
        eval_limit=args.eval_limit, baseline_shots=args.shots, latency_concurrency=levels,
        latency_requests=args.latency_requests,
        serve_args=tuple(args.serve_arg) if args.serve_arg is not None else defaults,
    )
    report = DemoPipeline(settings).run()
    print(f"demo finished: report at {report}")
    return 0
