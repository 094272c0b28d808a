"""`jaxtune demo --task sql` and `--task gsm8k` end to end on a tiny model and budget.

Each runs the task's shipped config (configs/train/<task>.yaml), cut down by overrides, through
every stage; resume after a kill is covered once, by the ViGGO demo test (test_demo.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.tiny_model import build_tiny_hf_model

REPO = Path(__file__).resolve().parents[3]
EVAL_LIMIT = 3
STEPS = 6
pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class TaskCase:
    """What the demo of one task must report."""

    task: str
    metrics: tuple[str, ...]  # the report's accuracy rows, named as in eval results.json
    best_metric: str  # what the task's config ranks checkpoints by (the export's step)


CASES = (
    TaskCase("sql", ("exact_match", "execution_match", "execution_match_real_db",
                     "execution_match_synthetic_db"), "val_exact_match"),
    TaskCase("gsm8k", ("strict_match", "flexible_match"), "val_strict_match"),
)


def _demo_argv(task: str, out: Path, base: Path) -> list[str]:
    # No --config: the demo's default, the task's own config. Six steps are too few for the
    # budget probe (the step compiles once); the task metric on 2 greedy-decoded rows at steps
    # 3 and 6 still ranks the checkpoints, as the shipped config does.
    return [sys.executable, "-m", "infra.cli", "demo", "--task", task, "--out", str(out),
            "--base-model", str(base), "--budget-minutes", "5",
            "--eval-limit", str(EVAL_LIMIT), "--shots", "1",
            "--latency-concurrency", "1", "--latency-requests", "2",
            "--serve-arg=--kv-cache-gib", "--serve-arg=0.25", "--serve-arg=--enforce-eager",
            "--serve-arg=--max-model-len", "--serve-arg=2048",
            f"train.steps={STEPS}", "train.log_every=2", "optimizer.warmup_steps=2",
            "eval.every=3", "checkpoint.every=3", "eval.task_samples=2", "eval.max_new_tokens=32"]


def _accuracy_rows(report: str) -> dict[str, list[str]]:
    """metric -> [base, base CI, tuned, tuned CI] cells of the report's accuracy table."""
    section = report.split("## Accuracy on the validation split")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| metric |"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def _shown(estimate: dict) -> str:
    return "n/a" if estimate["value"] is None else f"{estimate['value']:.3f}"


@pytest.mark.parametrize("case", CASES, ids=[case.task for case in CASES])
def test_demo_of_a_task_runs_end_to_end(tmp_path: Path, case: TaskCase) -> None:
    # The prompted baseline in the tiny tokenizer's many short tokens needs more than 512
    # tokens of context (as in the ViGGO demo test).
    base = build_tiny_hf_model(tmp_path / "base", max_position_embeddings=2048)
    out = tmp_path / "demo"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(_demo_argv(case.task, out, base), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    report = out / "REPORT.md"
    assert f"report at {report}" in result.stdout
    text = report.read_text()
    assert text.startswith(f"# jaxtune demo: {case.task} on base\n")

    # Base and tuned scored the same rows, every request answered (none over the context).
    results = {name: json.loads((out / "eval" / name / "results.json").read_text())
               for name in ("base", "tuned")}
    for name, res in results.items():
        assert res["task"] == case.task, name
        assert res["n_examples"] == res["n_scored"] == EVAL_LIMIT, name

    # The report's table holds the task's metrics, each with the values of the two evals.
    rows = _accuracy_rows(text)
    assert list(rows) == list(case.metrics)
    for metric, (base_cell, _, tuned_cell, _) in rows.items():
        assert base_cell == _shown(results["base"]["metrics"][metric]), metric
        assert tuned_cell == _shown(results["tuned"]["metrics"][metric]), metric
    if case.task == "sql":
        for res in results.values():
            # Execution runs on the databases shipped in the repository (real, by db_id) or on
            # synthetic ones from the schema: WikiSQL dev rows have no real database.
            assert res["config"]["db_dir"] == str(REPO / "data/sql/spider_db")
            by_group = {group: res["metrics"][f"execution_match_{group}"]["n"]
                        for group in ("real_db", "synthetic_db")}
            assert by_group == {"real_db": 0, "synthetic_db": EVAL_LIMIT}
        assert rows["execution_match_real_db"][0] == rows["execution_match_real_db"][2] == "n/a"
    else:
        assert "n/a" not in text.split("## Training")[0]

    # Training ran the task's config, and the export is the step its task metric ranked best.
    metrics = [json.loads(line)
               for line in (out / "train_run/metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == STEPS
    assert [row["step"] for row in metrics if case.best_metric in row] == [3, STEPS]
    export = json.loads((out / "stages/export.json").read_text())["outputs"]
    assert export["chosen_by"].startswith(f"step {export['step']}: highest {case.best_metric} ")
    assert f"- exported: {export['chosen_by']}" in text

    provenance = json.loads((out / "tuned_model/jaxtune.json").read_text())
    config = provenance["training_config"]
    assert [source["dataset"]["task"] for source in config["data"]["sources"]] == [case.task]
    assert config["data"]["sources"][0]["dataset"]["train_file"] == f"data/{case.task}/train.jsonl"
    assert config["train"]["steps"] == STEPS
    assert config["checkpoint"]["best_metric"] == case.best_metric
    assert f"data/{case.task}/train.jsonl" in provenance["datasets"]
    assert provenance["step"] == export["step"]
    for name, key in (("tuned", "tuned"), ("base", "base_prompted")):
        shipped = provenance["eval"][key]
        assert shipped["task"] == case.task and shipped["n_examples"] == EVAL_LIMIT
        assert {m: v["value"] for m, v in shipped["metrics"].items()} == \
            {m: v["value"] for m, v in results[name]["metrics"].items()}

