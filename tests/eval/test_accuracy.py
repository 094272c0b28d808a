"""Accuracy suite end to end against the fake server, and `compare` of two runs."""

import json
from pathlib import Path

import pytest

from eval.accuracy import AccuracyConfig, AccuracyConfigError, run_accuracy
from eval.client import ClientConfig
from eval.compare import CompareError, run_compare
from eval.tasks import get_task
from tests.eval.fake_server import FakeBehaviour, run_fake_server

REPO = Path(__file__).resolve().parents[2]
VIGGO = REPO / "data/viggo/valid.csv"
SQL = REPO / "data/sql/valid.jsonl"
VIGGO_TASK, SQL_TASK = get_task("viggo"), get_task("sql")


def test_structured_viggo_run_scores_served_answers(tmp_path):
    examples, _ = VIGGO_TASK.load_examples(VIGGO)
    examples = examples[:10]
    # The server knows the gold MR of the first 7 prompts and says something wrong otherwise.
    answers = {VIGGO_TASK.structured_prompt(e): e.target for e in examples[:7]}
    behaviour = FakeBehaviour(answers=answers, default_answer="request(name[Nothing])")
    with run_fake_server(behaviour) as url:
        summary = run_accuracy(AccuracyConfig(task="viggo", data=VIGGO, limit=10),
                               ClientConfig(base_url=url, model="tuned", concurrency=3),
                               tmp_path, progress=False)
    exact = summary["metrics"]["exact_match"]
    assert (exact["value"], exact["n"], exact["method"]) == (0.7, 10, "wilson")
    assert exact["low"] < 0.7 < exact["high"]
    assert summary["config"]["endpoint"] == "completions"
    assert summary["latency"]["completed"] == 10
    records = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert [r["correct"] for r in records] == [1.0] * 7 + [0.0] * 3
    assert records[0]["prompt"].startswith("<START_Q>")
    assert records[0]["request"]["ttft_s"] is not None
    for name in ("results.json", "report.md", "accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_chat_few_shot_sends_shots_and_skips_them(tmp_path):
    examples, _ = SQL_TASK.load_examples(SQL)
    # Correct for examples 2 and 3 (0 and 1 are the shots), found by the last user message.
    answers = {SQL_TASK.user_text(e): f"```sql\n{e.target};\n```" for e in examples[2:4]}
    behaviour = FakeBehaviour(answers=answers, default_answer="I do not know")
    with run_fake_server(behaviour) as url:
        summary = run_accuracy(
            AccuracyConfig(task="sql", data=SQL, style="chat", shots=2, limit=4),
            ClientConfig(base_url=url, model="base", concurrency=2), tmp_path, progress=False)
    assert summary["config"]["endpoint"] == "chat"
    assert summary["metrics"]["execution_match"]["value"] == 0.5
    assert summary["errors_by_kind"]["execution_match"] == {"no_sql": 2}
    first = json.loads((tmp_path / "examples.jsonl").read_text().splitlines()[0])
    roles = [m["role"] for m in first["prompt"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert first["prompt"][2]["content"] == examples[0].target
    assert first["source"].endswith(":3")


def test_failed_requests_are_unscored_not_wrong(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": "#### 72"}) + "\n"
                            for q in ("q [[500]]", "r", "s [[500]]", "t")))
    examples, _ = get_task("gsm8k").load_examples(data)
    wrong = {get_task("gsm8k").structured_prompt(examples[1]): "#### 1"}
    with run_fake_server(FakeBehaviour(answers=wrong, default_answer="#### 72")) as url:
        summary = run_accuracy(AccuracyConfig(task="gsm8k", data=data),
                               ClientConfig(base_url=url, model="m"), tmp_path, progress=False)
    # Two answered (one right, one wrong); the two failed requests count nowhere.
    strict = summary["metrics"]["strict_match"]
    assert (strict["value"], strict["n"], strict["n_unscorable"]) == (0.5, 2, 0)
    assert (summary["n_examples"], summary["n_scored"], summary["n_unscored"]) == (4, 2, 2)
    assert summary["unscored_by_error"] == {"http_500": 2}
    assert summary["errors_by_kind"]["strict_match"] == {}  # "#### 1" is wrong, not malformed
    records = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert [r["unscored"] for r in records] == ["http_500", None, "http_500", None]
    assert [r["correct"] for r in records] == [None, 0.0, None, 1.0]
    report = (tmp_path / "report.md").read_text()
    assert report.splitlines()[2].startswith("> **Warning: 2 of 4 requests failed (http_500 2)")


def test_a_run_where_every_request_failed_has_no_value(tmp_path):
    data = tmp_path / "g.jsonl"
    data.write_text(json.dumps({"question": "q [[500]]", "answer": "#### 72"}) + "\n")
    with run_fake_server(FakeBehaviour()) as url:
        summary = run_accuracy(AccuracyConfig(task="gsm8k", data=data),
                               ClientConfig(base_url=url, model="m"), tmp_path, progress=False)
    strict = summary["metrics"]["strict_match"]
    assert (strict["value"], strict["low"], strict["high"], strict["n"]) == (None, None, None, 0)
    assert "| strict_match | n/a | n/a | 0 |" in (tmp_path / "report.md").read_text()


def test_inconsistent_settings_are_rejected():
    with pytest.raises(AccuracyConfigError, match="--style chat"):
        AccuracyConfig(task="viggo", data=VIGGO, shots=1)
    with pytest.raises(AccuracyConfigError, match="chat endpoint"):
        AccuracyConfig(task="viggo", data=VIGGO, style="chat", endpoint="completions")
    with pytest.raises(ValueError, match="unknown task"):
        AccuracyConfig(task="nope", data=VIGGO)


def test_compare_pairs_runs_and_tests_with_mcnemar(tmp_path):
    examples, _ = VIGGO_TASK.load_examples(VIGGO)
    examples = examples[:12]
    runs = []
    for name, right in (("base", examples[:2]), ("tuned", examples[:11])):
        answers = {VIGGO_TASK.structured_prompt(e): e.target for e in right}
        with run_fake_server(FakeBehaviour(answers=answers, default_answer="x")) as url:
            run_accuracy(AccuracyConfig(task="viggo", data=VIGGO, limit=12),
                         ClientConfig(base_url=url, model=name), tmp_path / name, progress=False)
        runs.append(tmp_path / name)
    result = run_compare(runs, tmp_path / "cmp")
    (test,) = result["mcnemar"]["exact_match"]
    assert (test["only_a"], test["only_b"], test["n_pairs"]) == (0, 9, 12)
    assert test["p_value"] == pytest.approx(2 / 2**9)
    assert "attribute_f1" not in result["mcnemar"]  # not binary: no McNemar
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert "McNemar" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(CompareError, match="missing"):
        run_compare([runs[0], tmp_path], None)
