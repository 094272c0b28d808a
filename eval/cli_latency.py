"""`jaxtune eval latency`: TTFT/TPOT/ITL/E2E and throughput of an endpoint under load."""

from __future__ import annotations

import argparse
from pathlib import Path

from eval.cli_common import (
    add_endpoint_arguments,
    client_config_from_args,
    float_list,
    int_list,
    positive_int,
)
from eval.client import ENDPOINTS
from eval.failures import check_error_rate
from eval.latency import load_latency_config, run_latency


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `jaxtune eval latency` (they override --config)."""
    add_endpoint_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--config", type=Path,
                        help="YAML with LatencyConfig keys (e.g. configs/eval/latency.yaml)")
    parser.add_argument("--concurrency", type=int_list,
                        help="closed-loop levels, e.g. 1,4,16 (default 1,4,16)")
    parser.add_argument("--rate", type=float_list, dest="rates",
                        help="Poisson arrival rates in requests/s, e.g. 1,4")
    parser.add_argument("--max-concurrency", type=positive_int,
                        help="in-flight cap for --rate levels (default none)")
    parser.add_argument("--num-requests", type=positive_int, help="measured requests per level")
    parser.add_argument("--warmup", type=int, help="warm-up requests per level (excluded)")
    parser.add_argument("--prompts", dest="prompts_file",
                        help="JSONL with a 'prompt' field (default: random words)")
    parser.add_argument("--input-words", type=positive_int, help="words per random prompt")
    parser.add_argument("--output-tokens", type=positive_int, help="max_tokens per request")
    parser.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_const", const=False,
                        help="let the model stop early (default: fixed output length)")
    parser.add_argument("--seed", type=int, help="seed of prompts and arrival times")
    parser.add_argument("--slo-ttft-ms", type=float, dest="ttft_ms", help="goodput SLO on TTFT")
    parser.add_argument("--slo-tpot-ms", type=float, dest="tpot_ms", help="goodput SLO on TPOT")
    parser.add_argument("--slo-e2e-ms", type=float, dest="e2e_ms", help="goodput SLO on E2E")
    parser.add_argument("--endpoint", choices=ENDPOINTS, default="completions",
                        help="completions (default) or chat (prompt sent as one user message)")


def run(args: argparse.Namespace) -> int:
    """Run the load sweep and print one line per level."""
    overrides = {key: getattr(args, key) for key in (
        "concurrency", "rates", "max_concurrency", "num_requests", "warmup", "prompts_file",
        "input_words", "output_tokens", "ignore_eos", "seed", "ttft_ms", "tpot_ms", "e2e_ms")}
    config = load_latency_config(args.config, **overrides)
    client = client_config_from_args(args, endpoint=args.endpoint)
    result = run_latency(config, client, args.out)
    for lv in result["levels"]:
        goodput = lv.get("goodput")
        print(f"{lv['label']}: TTFT p50 {_ms(lv['ttft_ms']['p50'])} ms, TPOT p50 "
              f"{_ms(lv['tpot_ms']['p50'])} ms, ITL p50 {_ms(lv['itl_ms']['p50'])} ms, "
              f"{(lv['request_throughput'] or 0):.2f} req/s, "
              f"{(lv['output_throughput_tok_s'] or 0):.1f} tok/s, errors {lv['errors']}"
              + ("" if goodput is None else f", goodput {goodput:.2f} req/s"))
    report = args.out / "report.md"
    print(f"report: {report}")
    return check_error_rate(result["n_failed"], result["n_requests"], result["failed_by_error"],
                            args.max_error_rate, report, "were left out of every figure")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
