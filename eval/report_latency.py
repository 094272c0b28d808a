"""Files of a latency run: results.json, requests.jsonl, report.md, latency.png, throughput.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from eval.failures import describe, failure_notice
from eval.report_accuracy import latency_table

_METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2e_ms", "E2E"))
_PERCENTILES = ("p50", "p90", "p95", "p99")


def render_markdown(result: dict[str, Any]) -> str:
    """report.md of a latency run."""
    cfg = result["config"]
    prompts = cfg["prompts_file"] or f"{cfg['input_words']} random words"
    notice = failure_notice(result["n_failed"], result["n_requests"], result["failed_by_error"],
                            "every latency and throughput figure below")
    lines = [f"# Latency: `{result['model']}` at {result['client']['base_url']}", "",
             *([notice] if notice else []),
             (f"- {cfg['num_requests']} requests per level after {cfg['warmup']} warm-up "
             f"requests; {cfg['output_tokens']} output tokens (ignore_eos={cfg['ignore_eos']}); "
             f"prompts: {prompts}; "
             f"seed {cfg['seed']}"),
             f"- SLO: {cfg['slo']}", "",
             ("| level | completed | errors | req/s | output tok/s | goodput req/s | "
             "TTFT p50 | TPOT p50 | ITL p50 | E2E p50 |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for lv in result["levels"]:
        goodput = lv.get("goodput")
        lines.append(
            f"| {lv['label']} | {lv['completed']} | {lv['errors']} | "
            f"{(lv['request_throughput'] or 0):.2f} | {(lv['output_throughput_tok_s'] or 0):.1f} | "
            f"{'-' if goodput is None else f'{goodput:.2f}'} | "
            + " | ".join(_p50(lv[key]) for key, _ in _METRICS) + " |")
    for lv in result["levels"]:
        lines += ["", f"## {lv['label']}", ""]
        if lv["errors"]:
            lines.append(f"Errors: {describe(lv['errors_by_kind'])}")
            lines.append("")
        lines += latency_table(lv)
    return "\n".join(lines) + "\n"


def _p50(dist: dict[str, Any]) -> str:
    return "-" if dist["p50"] is None else f"{dist['p50']:.1f}"


def plot_latency(path: Path, result: dict[str, Any]) -> None:
    """One panel per metric: p50..p99 (ms) for every load level."""
    levels = result["levels"]
    fig, axes = plt.subplots(1, len(_METRICS), figsize=(4 * len(_METRICS), 3.6))
    for ax, (key, name) in zip(axes, _METRICS, strict=True):
        for lv in levels:
            values = [lv[key][p] if lv[key][p] is not None else float("nan") for p in _PERCENTILES]
            ax.plot(_PERCENTILES, values, marker="o", label=lv["label"])
        ax.set_title(f"{name} (ms)")
        ax.set_xlabel("percentile")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"latency percentiles: {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(path: Path, result: dict[str, Any]) -> None:
    """Throughput and p50/p99 TTFT against load level."""
    levels = result["levels"]
    labels = [lv["label"] for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(labels, [lv["output_throughput_tok_s"] or 0 for lv in levels], marker="o",
              label="output tok/s")
    left.set_ylabel("output tokens/s")
    twin = left.twinx()
    twin.plot(labels, [lv["request_throughput"] or 0 for lv in levels], marker="s",
              color="tab:orange", label="req/s")
    twin.set_ylabel("requests/s")
    left.set_title("throughput vs load")
    for key, style in (("p50", "-o"), ("p99", "--o")):
        right.plot(labels, [lv["ttft_ms"][key] or float("nan") for lv in levels], style,
                   label=f"TTFT {key}")
        right.plot(labels, [lv["tpot_ms"][key] or float("nan") for lv in levels], style,
                   label=f"TPOT {key}")
    right.set_ylabel("ms")
    right.set_title("latency vs load")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_latency_report(out_dir: Path, result: dict[str, Any]) -> None:
    """Write results.json (aggregates), requests.jsonl (per request), report.md and two PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "requests.jsonl", "w", encoding="utf-8") as handle:
        for lv in result["levels"]:
            handle.writelines(json.dumps({"level": lv["label"], **record}) + "\n" for record in lv["requests_detail"])
    slim = {**result, "levels": [{k: v for k, v in lv.items() if k != "requests_detail"}
                                 for lv in result["levels"]]}
    (out_dir / "results.json").write_text(json.dumps(slim, indent=2))
    (out_dir / "report.md").write_text(render_markdown(slim))
    plot_latency(out_dir / "latency.png", slim)
    plot_throughput(out_dir / "throughput.png", slim)
