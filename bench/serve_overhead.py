"""Serving overhead: `jaxtune serve` vs `vllm serve` vs a plain transformers `generate` server.

The three servers are started one after the other on the same HF model folder (only one
engine at a time on this machine) and loaded identically by vLLM's own load generator,
`vllm bench serve` (called in-process through `vllm.benchmarks.serve`): random prompts of
`--input-len` tokens, `--output-len` tokens each (`ignore_eos`, greedy), at each concurrency in
`--concurrency`. `jaxtune serve` and `vllm serve` get the same engine settings. The table shows
output tokens/s and TTFT p50 per server (the median run over `--repeats`) and the ratios; targets: jaxtune >= 0.95x vllm serve
and >= 5x transformers at 16 concurrent.

    python bench/serve_overhead.py --model DIR --out /tmp/serve_bench

Writes `results.json`, `serve_overhead.png` and `table.md` to `--out`, and each server's log.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.pipeline.server_process import free_port, running_server

logger = logging.getLogger("serve_overhead")

REPO = Path(__file__).resolve().parent.parent
SERVED_NAME = "bench"
SERVERS = ("jaxtune", "vllm", "transformers")
TARGET_VS_VLLM = 0.95
TARGET_VS_TRANSFORMERS = 5.0


@dataclass(frozen=True)
class LevelResult:
    server: str
    concurrency: int
    requests: int
    completed: int
    failed: int
    output_tok_s: float
    ttft_p50_ms: float
    tpot_p50_ms: float
    duration_s: float


def server_command(kind: str, args: argparse.Namespace, port: int) -> list[str]:
    """The command line of one server; jaxtune and vllm get the same engine settings."""
    model = str(args.model)
    if kind == "jaxtune":
        cmd = [sys.executable, "-m", "serve", "--model", model, "--name", SERVED_NAME,
               "--port", str(port), "--kv-cache-gib", str(args.kv_cache_gib),
               "--max-model-len", str(args.max_model_len), "--max-in-flight", "1024"]
        return cmd + (["--enforce-eager"] if args.enforce_eager else [])
    if kind == "vllm":
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--kv-cache-memory-bytes", str(int(args.kv_cache_gib * (1 << 30))),
               "--max-model-len", str(args.max_model_len), "--uvicorn-log-level", "warning"]
        return cmd + (["--enforce-eager"] if args.enforce_eager else [])
    if kind == "transformers":
        return [sys.executable, str(REPO / "bench" / "transformers_server.py"), "--model", model,
                "--name", SERVED_NAME, "--port", str(port)]
    raise ValueError(f"unknown server kind {kind!r}")


@contextlib.contextmanager
def running(kind: str, args: argparse.Namespace):
    """Start one server, wait until it answers, yield its URL, stop it."""
    port = free_port()
    cmd = server_command(kind, args, port)
    logger.info("starting %s: %s", kind, " ".join(cmd))
    started = time.monotonic()
    # An empty key disables auth: every server is measured without it.
    env = {"PYTHONPATH": str(REPO), "JAXTUNE_API_KEY": ""}
    with running_server(cmd, port, args.out / f"{kind}_server.log", ready_path="/health",
                        timeout_s=args.start_timeout, poll_s=2, env=env, cwd=REPO) as url:
        logger.info("%s up in %.0f s", kind, time.monotonic() - started)
        yield url


def bench_level(url: str, args: argparse.Namespace, concurrency: int, requests: int,
                warmups: int) -> dict:
    """One `vllm bench serve` run at `concurrency`; returns vLLM's result dict."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
            "--model", SERVED_NAME, "--tokenizer", str(args.model),
            "--dataset-name", "random", "--random-input-len", str(args.input_len),
            "--random-output-len", str(args.output_len), "--ignore-eos",
            "--num-prompts", str(requests), "--max-concurrency", str(concurrency),
            "--num-warmups", str(warmups), "--temperature", "0", "--seed", str(args.seed),
            "--percentile-metrics", "ttft,tpot", "--metric-percentiles", "50",
            "--disable-tqdm"]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its own long table
        return main(parser.parse_args(argv))


def requests_for(concurrency: int, args: argparse.Namespace, kind: str) -> int:
    # At least two waves so the level measures steady batching, not one ramp; the
    # one-at-a-time transformers server gets one wave (it would take many minutes otherwise).
    waves = 1 if kind == "transformers" else 2
    return max(concurrency * waves, args.min_requests)


def run_server(kind: str, args: argparse.Namespace) -> list[LevelResult]:
    results = []
    with running(kind, args) as url:
        for c in args.concurrency:
            n = requests_for(c, args, kind)
            started = time.monotonic()
            r = bench_level(url, args, c, n, warmups=min(c, 4))
            level = LevelResult(kind, c, n, int(r["completed"]), int(r["failed"]),
                                float(r["output_throughput"]), float(r["median_ttft_ms"]),
                                float(r["median_tpot_ms"]), float(r["duration"]))
            logger.info("%s c=%d: %.1f tok/s, TTFT p50 %.0f ms (%d/%d ok) in %.0f s", kind, c,
                        level.output_tok_s, level.ttft_p50_ms, level.completed, n,
                        time.monotonic() - started)
            results.append(level)
    return results


def medians(results: list[LevelResult]) -> dict[tuple[str, int], LevelResult]:
    """Per (server, concurrency): the run with the median tok/s over `--repeats` (TTFT from
    that same run, so each row is one real measurement)."""
    groups: dict[tuple[str, int], list[LevelResult]] = {}
    for r in results:
        groups.setdefault((r.server, r.concurrency), []).append(r)
    return {key: sorted(runs, key=lambda r: r.output_tok_s)[(len(runs) - 1) // 2]
            for key, runs in groups.items()}


def table(results: list[LevelResult], levels: list[int]) -> str:
    by = medians(results)
    lines = [("| concurrency | jaxtune tok/s | vllm serve tok/s | transformers tok/s | "
             "jaxtune / vllm | jaxtune / transformers | TTFT p50 jaxtune | TTFT p50 vllm | "
             "TTFT p50 transformers | failed (j/v/t) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in levels:
        j, v, t = (by.get((s, c)) for s in SERVERS)

        def tok(r: LevelResult | None) -> str:
            return f"{r.output_tok_s:.1f}" if r else "-"

        def ttft(r: LevelResult | None) -> str:
            return f"{r.ttft_p50_ms:.0f} ms" if r else "-"

        def ratio(a: LevelResult | None, b: LevelResult | None) -> str:
            return f"{a.output_tok_s / b.output_tok_s:.2f}x" if a and b and b.output_tok_s else "-"

        failed = "/".join(str(r.failed) if r else "-" for r in (j, v, t))
        lines.append(f"| {c} | {tok(j)} | {tok(v)} | {tok(t)} | {ratio(j, v)} | {ratio(j, t)} "
                     f"| {ttft(j)} | {ttft(v)} | {ttft(t)} | {failed} |")
    return "\n".join(lines)


def plot(results: list[LevelResult], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tok, ax_ttft) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    by = medians(results)
    for i, server in enumerate(SERVERS):
        rows = {c: r for (s, c), r in by.items() if s == server}
        xs = [k + (i - 1) * width for k in range(len(levels))]
        ax_tok.bar(xs, [rows[c].output_tok_s if c in rows else 0 for c in levels], width,
                   label=server)
        ax_ttft.bar(xs, [rows[c].ttft_p50_ms if c in rows else 0 for c in levels], width,
                    label=server)
    for ax, title in ((ax_tok, "output tokens/s (higher is better)"),
                      (ax_ttft, "TTFT p50, ms (lower is better)")):
        ax.set_xticks(range(len(levels)), [f"{c} concurrent" for c in levels])
        ax.set_title(title)
        ax.legend()
    ax_ttft.set_yscale("log")
    fig.suptitle("jaxtune serve vs vllm serve vs transformers generate (same model and load)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="HF model folder")
    parser.add_argument("--out", type=Path, default=Path("/tmp/serve_overhead"))
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16, 64])
    parser.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS))
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--enforce-eager", action="store_true",
                        help="both vLLM servers without torch.compile (faster start)")
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the server sequence this many times; report the median")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    args.out.mkdir(parents=True, exist_ok=True)

    results: list[LevelResult] = []
    # Repeats alternate the servers so that the machine's load drifts hit all of them alike.
    for _ in range(args.repeats):
        for kind in args.servers:
            results += run_server(kind, args)
        (args.out / "results.json").write_text(json.dumps(
            {"model": str(args.model), "argv": sys.argv[1:],
             "results": [asdict(r) for r in results]}, indent=2))

    md = table(results, args.concurrency)
    (args.out / "table.md").write_text(md + "\n")
    plot(results, args.concurrency, args.out / "serve_overhead.png")
    print(md)
    by = medians(results)
    j, v, t = (by.get((s, 16)) for s in SERVERS)
    if j and v and t and v.output_tok_s and t.output_tok_s:
        rv, rt = j.output_tok_s / v.output_tok_s, j.output_tok_s / t.output_tok_s
        print(f"\nat 16 concurrent: jaxtune/vllm {rv:.2f}x (target >= {TARGET_VS_VLLM}x: "
              f"{'met' if rv >= TARGET_VS_VLLM else 'MISSED'}), jaxtune/transformers "
              f"{rt:.1f}x (target >= {TARGET_VS_TRANSFORMERS}x: "
              f"{'met' if rt >= TARGET_VS_TRANSFORMERS else 'MISSED'})")
    print(f"results: {args.out}/results.json, plot: {args.out}/serve_overhead.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
