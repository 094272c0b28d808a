"""`jaxtune eval accuracy` and `jaxtune eval latency` against a real `jaxtune serve` (vLLM).

The package's one server (`tests/eval/conftest.py::tiny_server`, the random tiny Llama of
`tests/fixtures/tiny_model.py`); everything runs through the `jaxtune` console script, as a
user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

JAXTUNE = str(Path(sys.executable).parent / "jaxtune")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_server) -> str:
    return tiny_server.url


def _jaxtune(*argv) -> subprocess.CompletedProcess:
    result = subprocess.run([JAXTUNE, *map(str, argv)], capture_output=True, text=True,
                            timeout=300, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_accuracy_structured_and_chat_few_shot(server, tmp_path):
    _jaxtune("eval", "accuracy", "--task", "viggo", "--data", REPO / "data/viggo/valid.csv",
             "--base-url", server, "--model", "tiny", "--limit", 4, "--concurrency", 2,
             "--max-tokens", 16, "--out", tmp_path / "viggo")
    summary = json.loads((tmp_path / "viggo" / "results.json").read_text())
    assert summary["n_examples"] == 4 and summary["config"]["endpoint"] == "completions"
    assert summary["latency"]["completed"] == 4 and summary["latency"]["errors"] == 0
    records = [json.loads(line) for line in
               (tmp_path / "viggo" / "examples.jsonl").read_text().splitlines()]
    assert all(r["prediction"] and r["request"]["output_tokens"] <= 16 for r in records)

    _jaxtune("eval", "accuracy", "--task", "sql", "--data", REPO / "data/sql/valid.jsonl",
             "--base-url", server, "--model", "tiny", "--limit", 3, "--style", "chat",
             "--shots", 1, "--max-tokens", 16, "--out", tmp_path / "sql")
    summary = json.loads((tmp_path / "sql" / "results.json").read_text())
    assert summary["config"]["endpoint"] == "chat"
    assert summary["latency"]["completed"] == 3
    # A random model writes no SQL: every answer is wrong for a stated reason.
    assert sum(summary["errors_by_kind"]["execution_match"].values()) == 3


def test_latency_sweep_counts_exact_output_tokens(server, tmp_path):
    _jaxtune("eval", "latency", "--base-url", server, "--model", "tiny", "--concurrency", "1,2",
             "--rate", "4", "--num-requests", 4, "--warmup", 1, "--output-tokens", 8,
             "--input-words", 16, "--out", tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    assert [lv["label"] for lv in result["levels"]] == ["c=1", "c=2", "rate=4/s"]
    for level in result["levels"]:
        assert level["completed"] == 4 and level["errors"] == 0
        assert level["output_tokens"] == 4 * 8  # ignore_eos: exactly max_tokens each
        assert level["ttft_ms"]["p50"] > 0 and level["tpot_ms"]["n"] == 4
    assert (tmp_path / "latency.png").stat().st_size > 0


def test_accuracy_constrained_keeps_the_task_grammar(server, tmp_path):
    # The random model writes no SQL freely; under the SQL task's grammar (vLLM structured
    # outputs) each answer is a single SELECT statement, complete or cut at the token budget.
    import regex

    from eval.tasks import get_task

    _jaxtune("eval", "accuracy", "--task", "sql", "--data", REPO / "data/sql/valid.jsonl",
             "--base-url", server, "--model", "tiny", "--limit", 3, "--concurrency", 3,
             "--max-tokens", 16, "--out", tmp_path, "--constrained")
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["kind"] == "constrained_accuracy" and result["paired_examples"] == 3
    assert "| execution_match |" in (tmp_path / "report.md").read_text()
    shape = get_task("sql").output_grammar()["regex"]

    def predictions(name: str) -> list[str]:
        lines = (tmp_path / name / "examples.jsonl").read_text().splitlines()
        return [json.loads(line)["prediction"] for line in lines]

    bound, free = predictions("constrained"), predictions("unconstrained")
    assert len(bound) == 3 and all(regex.fullmatch(shape, p, partial=True) for p in bound), bound
    assert not any(regex.fullmatch(shape, p, partial=True) for p in free), free
