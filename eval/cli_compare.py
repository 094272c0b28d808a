"""`jaxtune eval compare`: several accuracy runs side by side with a paired McNemar test."""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.compare import run_compare
from eval.report_accuracy import fmt_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune eval compare`."""
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="accuracy output directories; the first is the baseline")
    parser.add_argument("--out", required=True, type=Path, help="output directory")


def run(args: argparse.Namespace) -> int:
    """Compare the runs and print the tests."""
    result = run_compare(args.runs, args.out)
    for run_info in result["runs"]:
        # fmt_value: a metric with nothing scored (e.g. an empty SQL group) has no value.
        values = ", ".join(f"{k} {fmt_value(v['value'])}" for k, v in run_info["metrics"].items())
        print(f"{run_info['name']}: {values}")
    for metric, tests in result["mcnemar"].items():
        for test in tests:
            print(f"{metric}: {test['run']} vs {test['baseline']}: p={test['p_value']:.4g} "
                  f"({test['only_b']} gained, {test['only_a']} lost)")
    print(f"report: {args.out / 'report.md'}")
    return 0
