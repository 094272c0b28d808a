"""Compare accuracy runs on the same examples (e.g. base vs tuned): table, McNemar, bar chart.

Runs are paired by example (file name, line and gold answer), so the test is the paired
exact McNemar test on binary metrics, each run against the first (the baseline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from eval.report_accuracy import EXAMPLES_FILE, RESULTS_FILE, fmt_interval, fmt_value
from eval.stats import mcnemar


class CompareError(ValueError):
    """The runs cannot be compared; the message says why."""


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """results.json plus the per-example scores keyed by example of one accuracy run."""
    run_dir = Path(run_dir)
    results_path, examples_path = run_dir / RESULTS_FILE, run_dir / EXAMPLES_FILE
    for path in (results_path, examples_path):
        if not path.is_file():
            raise CompareError(f"{run_dir} is not an accuracy run directory: {path.name} missing")
    summary = json.loads(results_path.read_text())
    if summary.get("kind") != "accuracy":
        raise CompareError(f"{results_path} is not an accuracy result (kind={summary.get('kind')!r})")
    scores = {}
    with open(examples_path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            scores[_example_key(record["source"], record["gold"])] = record["scores"]
    return {"name": run_dir.name, "dir": str(run_dir), "summary": summary, "scores": scores}


def _example_key(source: str, gold: str) -> tuple[str, str]:
    # File name and line, not the path: runs may name the same file relatively or absolutely.
    path, _, line = source.rpartition(":")
    return f"{Path(path).name}:{line}", gold


def compare_runs(run_dirs: list[str | Path]) -> dict[str, Any]:
    """The comparison of `run_dirs` (first = baseline) as a JSON-ready dict."""
    if len(run_dirs) < 2:
        raise CompareError("compare needs at least two run directories")
    runs = [load_run(d) for d in run_dirs]
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    tasks = {r["summary"]["task"] for r in runs}
    if len(tasks) != 1:
        raise CompareError(f"runs are of different tasks: {sorted(tasks)}")
    shared = set.intersection(*(set(r["scores"]) for r in runs))
    if not shared:
        raise CompareError("the runs share no examples (different data files?)")
    keys = sorted(shared)
    baseline = runs[0]
    metrics = baseline["summary"]["metrics"]
    tests: dict[str, list[dict[str, Any]]] = {}
    for metric, info in metrics.items():
        if info["kind"] != "binary":
            continue
        base_values = [baseline["scores"][k][metric] for k in keys]
        tests[metric] = [{"baseline": names[0], "run": names[i],
                          **mcnemar(base_values, [run["scores"][k][metric] for k in keys]).to_dict()}
                         for i, run in enumerate(runs[1:], start=1)]
    return {
        "kind": "compare",
        "task": tasks.pop(),
        "runs": [{"name": n, "dir": r["dir"], "model": r["summary"]["model"],
                  "n_examples": r["summary"]["n_examples"], "metrics": r["summary"]["metrics"],
                  "n_unscored": r["summary"].get("n_unscored", 0),
                  "style": r["summary"]["config"]["style"], "shots": r["summary"]["config"]["shots"]}
                 for n, r in zip(names, runs, strict=True)],
        "paired_examples": len(keys),
        "mcnemar": tests,
    }


def render_markdown(result: dict[str, Any]) -> str:
    """report.md of a comparison."""
    runs = result["runs"]
    metric_names = list(runs[0]["metrics"])
    lines = [f"# Compare: {result['task']}", "",
             (f"{len(runs)} runs, {result['paired_examples']} examples in common; "
             f"baseline `{runs[0]['name']}`."), "",
             "| run | model | style | shots | unscored | " + " | ".join(metric_names) + " |",
             "|---|---|---|---|---|" + "---|" * len(metric_names)]
    for run in runs:
        cells = [f"{fmt_value(run['metrics'][m]['value'])} {fmt_interval(run['metrics'][m])}"
                 for m in metric_names]
        lines.append(f"| {run['name']} | {run['model']} | {run['style']} | {run['shots']} | "
                     f"{run['n_unscored']} | " + " | ".join(cells) + " |")
    lines += ["", "## Paired exact McNemar test (vs baseline)", "",
              "| metric | run | only baseline right | only run right | pairs | p-value |",
              "|---|---|---|---|---|---|"]
    for metric, tests in result["mcnemar"].items():
        for test in tests:
            lines.append(f"| {metric} | {test['run']} | {test['only_a']} | {test['only_b']} | "
                         f"{test['n_pairs']} | {test['p_value']:.4g} |")
    lines += ["", ("Metric values are over each run's own scored examples (failed requests are "
              "unscored); the test uses only the examples scored in both runs.")]
    return "\n".join(lines) + "\n"


def plot_compare(path: Path, result: dict[str, Any]) -> None:
    """Grouped bars: metrics on the x axis, one bar per run, 95% CI error bars."""
    runs = result["runs"]
    metric_names = list(runs[0]["metrics"])
    x = np.arange(len(metric_names))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(2.2 * len(metric_names) + 2, 3.8))
    for i, run in enumerate(runs):
        # A metric with nothing scored (value None) gets no bar.
        m = [run["metrics"][name] for name in metric_names]
        values = [np.nan if v["value"] is None else v["value"] for v in m]
        err = [[0.0 if v["value"] is None else max(0.0, v["value"] - v["low"]) for v in m],
               [0.0 if v["value"] is None else max(0.0, v["high"] - v["value"]) for v in m]]
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, values, width, yerr=err, capsize=4,
               label=run["name"])
    ax.set_xticks(x, metric_names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.set_title(f"{result['task']}: runs compared")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_compare(run_dirs: list[str | Path], out_dir: str | Path | None) -> dict[str, Any]:
    """Compare runs and (if `out_dir`) write results.json, report.md and compare.png."""
    result = compare_runs(run_dirs)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2))
        (out / "report.md").write_text(render_markdown(result))
        plot_compare(out / "compare.png", result)
    return result
