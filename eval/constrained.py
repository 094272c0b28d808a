"""`jaxtune eval accuracy --constrained`: the same examples decoded freely and under the task's
output grammar (`Task.output_grammar`, sent as vLLM's ``structured_outputs``), side by side.

Each pass is a full accuracy run in its own directory (``unconstrained/``, ``constrained/``);
the top-level report puts their metrics next to each other with the paired exact McNemar
test of every binary metric (`eval.compare`), so "does the grammar help?" is answered on
the same examples. The constrained pass first checks that the server accepts the grammar
(`eval.constrained_check`): a server that refuses it stops the run with one line, before any
example is scored, and nothing falls back to free decoding.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from eval.accuracy import AccuracyConfig, run_accuracy
from eval.client import ClientConfig
from eval.compare import compare_runs, plot_compare
from eval.report_accuracy import fmt_interval, fmt_value
from eval.tasks import get_task

PASSES = ("unconstrained", "constrained")


def run_constrained_accuracy(config: AccuracyConfig, client_config: ClientConfig,
                             out_dir: str | Path, *, cache_path: str | Path | None = None,
                             progress: bool = True) -> dict[str, Any]:
    """Run `config` unconstrained, then constrained, into `out_dir`/<pass>/, and write the
    side-by-side results.json, report.md and compare.png in `out_dir`.

    Raises `ConstrainedDecodingError` when the server refuses the task's grammar, and
    `AccuracyConfigError` when the task has none. Returns the side-by-side summary.
    """
    out = Path(out_dir)
    configs = {"unconstrained": replace(config, constrained=False),
               "constrained": replace(config, constrained=True)}  # AccuracyConfigError here
    # The constrained pass first: a server that refuses the grammar stops the run at once.
    summaries = {
        name: run_accuracy(configs[name], client_config, out / name, cache_path=cache_path,
                           progress=progress)
        for name in reversed(PASSES)
    }
    paired = compare_runs([out / name for name in PASSES])
    result = side_by_side(config.task, summaries, paired)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(render_markdown(result))
    plot_compare(out / "compare.png", paired)
    return result


def side_by_side(task_name: str, summaries: dict[str, dict[str, Any]],
                 paired: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready comparison of the two passes (their summaries and McNemar tests)."""
    tests = {metric: runs[0] for metric, runs in paired["mcnemar"].items()}
    return {
        "kind": "constrained_accuracy",
        "task": task_name,
        "grammar": get_task(task_name).output_grammar(),
        "model": summaries["constrained"]["model"],
        "paired_examples": paired["paired_examples"],
        "passes": {name: {"dir": name, "n_examples": s["n_examples"],
                          "n_unscored": s["n_unscored"],
                          "unscored_by_error": s["unscored_by_error"],
                          "metrics": s["metrics"], "latency": s["latency"]}
                   for name, s in summaries.items()},
        "mcnemar": tests,
    }


def render_markdown(result: dict[str, Any]) -> str:
    """report.md: metrics of both passes side by side, the paired test, the grammar."""
    free, bound = (result["passes"][name] for name in PASSES)
    lines = [f"# Constrained vs unconstrained decoding: {result['task']} on `{result['model']}`",
             "",
             (f"The same examples decoded freely and under the task's output grammar; "
              f"{result['paired_examples']} examples paired. Each pass's own report is in "
              "`unconstrained/` and `constrained/`."), "",
             ("| metric | unconstrained | constrained | only unconstrained right | only "
              "constrained right | McNemar p |"),
             "|---|---|---|---|---|---|"]
    for name, metric in free["metrics"].items():
        other = bound["metrics"][name]
        test = result["mcnemar"].get(name)
        tested = (f"{test['only_a']} | {test['only_b']} | {test['p_value']:.4g}" if test
                  else "- | - | -")  # mean metrics (e.g. attribute F1): no paired binary test
        lines.append(f"| {name} | {fmt_value(metric['value'])} {fmt_interval(metric)} | "
                     f"{fmt_value(other['value'])} {fmt_interval(other)} | {tested} |")
    lines += ["", (f"Unscored (failed requests): unconstrained {free['n_unscored']}, "
                   f"constrained {bound['n_unscored']} of {bound['n_examples']}. Metric values "
                   "are over each pass's scored examples; the test uses the examples scored in "
                   "both."), "",
              "## Grammar", "", "```json", json.dumps(result["grammar"], indent=2), "```"]
    return "\n".join(lines) + "\n"
