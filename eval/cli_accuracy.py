"""`jaxtune eval accuracy`: task accuracy of a served model (optionally under load)."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

from eval.accuracy import AccuracyConfig, run_accuracy
from eval.cli_common import add_endpoint_arguments, client_config_from_args, positive_int
from eval.client import ENDPOINTS, ClientConfig
from eval.constrained import run_constrained_accuracy
from eval.failures import check_error_rate, describe
from eval.report_accuracy import fmt_interval, fmt_value
from eval.tasks import TASK_NAMES
from eval.tasks.records import PROMPT_STYLES

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune eval accuracy`."""
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--data", required=True, type=Path,
                        help="task file in its native format (ViGGO CSV; SQL/GSM8K JSONL)")
    add_endpoint_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--limit", type=positive_int, help="evaluate only the first N examples")
    parser.add_argument("--concurrency", type=positive_int, default=8,
                        help="requests in flight (default 8); latency is recorded at this load")
    parser.add_argument("--style", choices=PROMPT_STYLES, default="structured",
                        help="structured (tuned models, /v1/completions) or chat (chat template, "
                             "/v1/chat/completions; for baselines) (default structured)")
    parser.add_argument("--endpoint", choices=ENDPOINTS,
                        help="override the endpoint implied by --style")
    parser.add_argument("--shots", type=int, default=0,
                        help="few-shot examples for --style chat (default 0)")
    parser.add_argument("--shot-data", type=Path,
                        help="file to take shots from (default: the first K rows of --data, "
                             "which are then not evaluated)")
    parser.add_argument("--max-tokens", type=positive_int,
                        help="answer token budget (default: the task's)")
    parser.add_argument("--cache", type=Path,
                        help="SQLite file caching generations by (model, prompt, parameters)")
    parser.add_argument("--skip-bad-rows", action="store_true",
                        help="skip malformed data rows (logged) instead of failing")
    parser.add_argument("--db-dir", type=Path,
                        help="--task sql: directory of real SQLite databases, DIR/<db_id>.sqlite "
                             "or DIR/<db_id>/<db_id>.sqlite; a row whose db_id has one is "
                             "executed there (read-only, time-limited), the others on synthetic "
                             "databases (default: the shipped Spider databases, "
                             "data/sql/spider_db, when present)")
    parser.add_argument("--constrained", action="store_true",
                        help="also decode under the task's output grammar (vLLM structured "
                             "outputs) and report both passes side by side with McNemar's "
                             "test; fails if the server refuses the grammar")


def run(args: argparse.Namespace) -> int:
    """Run the accuracy suite and print where the report is."""
    config = AccuracyConfig(task=args.task, data=args.data, style=args.style,
                            endpoint=args.endpoint, shots=args.shots, shot_data=args.shot_data,
                            limit=args.limit, max_tokens=args.max_tokens,
                            skip_bad_rows=args.skip_bad_rows, db_dir=args.db_dir)
    client = client_config_from_args(args, endpoint=config.resolved_endpoint,
                                     concurrency=args.concurrency)
    if args.constrained:
        return _run_constrained(args, config, client)
    summary = run_accuracy(config, client, args.out, cache_path=args.cache)
    if summary["n_unscored"]:
        print(f"UNSCORED: {summary['n_unscored']} of {summary['n_examples']} requests failed "
              f"({describe(summary['unscored_by_error'])}); the metrics cover the "
              f"{summary['n_scored']} answered examples only")
    for name, metric in summary["metrics"].items():
        print(f"{name}: {fmt_value(metric['value'])} {fmt_interval(metric)} (n={metric['n']})")
    report = args.out / "report.md"
    print(f"report: {report}")
    return check_error_rate(summary["n_unscored"], summary["n_examples"],
                            summary["unscored_by_error"], args.max_error_rate, report,
                            "were not scored")


def _run_constrained(args: argparse.Namespace, config: AccuracyConfig,
                     client: ClientConfig) -> int:
    result = run_constrained_accuracy(config, client, args.out, cache_path=args.cache)
    free, bound = result["passes"]["unconstrained"], result["passes"]["constrained"]
    for name, metric in free["metrics"].items():
        other, test = bound["metrics"][name], result["mcnemar"].get(name)
        p_value = f" McNemar p={test['p_value']:.4g}" if test else ""
        print(f"{name}: unconstrained {fmt_value(metric['value'])} {fmt_interval(metric)} | "
              f"constrained {fmt_value(other['value'])} {fmt_interval(other)}{p_value}")
    report = args.out / "report.md"
    print(f"report: {report}")
    unscored = free["n_unscored"] + bound["n_unscored"]
    by_error = dict(Counter(free["unscored_by_error"]) + Counter(bound["unscored_by_error"]))
    return check_error_rate(unscored, free["n_examples"] + bound["n_examples"], by_error,
                            args.max_error_rate, report, "were not scored")
