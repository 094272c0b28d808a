"""Files of an accuracy run: results.json, examples.jsonl, report.md and accuracy.png."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from eval.accuracy_records import ExampleResult
from eval.failures import describe, failure_notice

RESULTS_FILE = "results.json"
EXAMPLES_FILE = "examples.jsonl"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def fmt_interval(metric: dict[str, Any]) -> str:
    """``[low, high]``, or n/a when nothing was scored."""
    if metric["low"] is None:
        return "n/a"
    return f"[{metric['low']:.3f}, {metric['high']:.3f}]"


def latency_table(latency: dict[str, Any]) -> list[str]:
    """Markdown rows of the latency distributions (ms) of a summary."""
    rows = ["| metric | n | mean | p50 | p90 | p95 | p99 |", "|---|---|---|---|---|---|---|"]
    for key, label in (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)"),
                       ("itl_ms", "ITL (ms)"), ("e2e_ms", "E2E (ms)")):
        d = latency[key]
        rows.append(f"| {label} | {d['n']} | {_ms(d['mean'])} | {_ms(d['p50'])} | "
                    f"{_ms(d['p90'])} | {_ms(d['p95'])} | {_ms(d['p99'])} |")
    return rows


def render_markdown(summary: dict[str, Any]) -> str:
    """report.md of an accuracy run."""
    cfg = summary["config"]
    notice = failure_notice(summary["n_unscored"], summary["n_examples"],
                            summary["unscored_by_error"], "every metric below (unscored)")
    databases = [(f"- real databases: `{cfg['db_dir']}` (rows whose `db_id` has a database "
                  "there run on it; the others on synthetic databases built from their schema)")
                 ] if cfg.get("db_dir") else []
    lines = [f"# Accuracy: {summary['task']} on `{summary['model']}`", "",
             *([notice] if notice else []),
             (f"- data: `{cfg['data']}` ({summary['n_examples']} examples sent, "
              f"{summary['n_scored']} answered and scored, {summary['n_unscored']} unscored)"),
             f"- prompt style: {cfg['style']}, endpoint: {cfg['endpoint']}, shots: {cfg['shots']}",
             *databases,
             (f"- server: {summary['client']['base_url']}, concurrency "
             f"{summary['client']['concurrency']}"), "",
             "| metric | value | 95% CI | n | not scorable | CI method |",
             "|---|---|---|---|---|---|"]
    for name, m in summary["metrics"].items():
        lines.append(f"| {name} | {fmt_value(m['value'])} | {fmt_interval(m)} | "
                     f"{m['n']} | {m['n_unscorable']} | {m['method']} |")
    grouped = [f"`{name}`" for name, m in summary["metrics"].items() if m.get("group")]
    if grouped:
        lines += ["", (f"{', '.join(grouped)}: the metric over the examples of that group only "
                       "(its n and not scorable count that group); the row without a group "
                       "covers them all.")]
    lines += ["", "## Failures by kind", ""]
    any_error = False
    for name, counts in summary["errors_by_kind"].items():
        if counts:
            any_error = True
            lines.append(f"- {name}: {describe(counts)}")
    if not any_error:
        lines.append("- none")
    lat = summary["latency"]
    lines += ["", "## Latency of the same requests", "",
              (f"{lat['completed']} timed requests ({lat['cached']} from cache, {lat['errors']} "
              f"failed) in {lat['duration_s']:.1f} s; "
              f"{(lat['request_throughput'] or 0):.2f} req/s, "
              f"{(lat['output_throughput_tok_s'] or 0):.1f} output tok/s."), ""]
    lines += latency_table(lat)
    return "\n".join(lines) + "\n"


def plot_metrics(path: Path, title: str, metrics: dict[str, dict[str, Any]]) -> None:
    """Bar chart of metric values with 95% CI error bars."""
    names = [n for n in metrics if metrics[n]["value"] is not None]  # n/a: nothing scored
    values = [metrics[n]["value"] for n in names]
    lower = [max(0.0, metrics[n]["value"] - metrics[n]["low"]) for n in names]
    upper = [max(0.0, metrics[n]["high"] - metrics[n]["value"]) for n in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    ax.bar(names, values, yerr=[lower, upper], capsize=6, color="#4c72b0")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_accuracy_report(out_dir: Path, summary: dict[str, Any],
                          results: Sequence[ExampleResult]) -> None:
    """Write the four files of an accuracy run into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    with open(out_dir / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(result.to_dict(), ensure_ascii=False) + "\n" for result in results)
    (out_dir / "report.md").write_text(render_markdown(summary))
    plot_metrics(out_dir / "accuracy.png", f"{summary['task']}: {summary['model']}",
                 summary["metrics"])
