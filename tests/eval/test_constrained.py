"""Constrained decoding in eval (`jaxtune eval accuracy --constrained`): each task's output
grammar, the request payload, the side-by-side report, and a refusing server."""

import json
import re
from pathlib import Path

import pytest

from eval.accuracy import AccuracyConfig
from eval.client import ClientConfig
from eval.constrained import run_constrained_accuracy
from eval.tasks import get_task
from infra.cli import main
from tests.eval.fake_server import FakeBehaviour, run_fake_server

REPO = Path(__file__).resolve().parents[2]
VIGGO = REPO / "data/viggo/valid.csv"
GOLD = {"viggo": VIGGO, "gsm8k": REPO / "data/gsm8k/valid.jsonl",
        "sql": REPO / "data/sql/valid.jsonl"}
# Outputs each grammar must reject: prose, a wrong shape, an unknown function or attribute.
REJECTED = {
    "viggo": ["The game is good.", "inform(name[X]) and more", "tell(name[X])",
              "inform(colour[red])", "inform(name[X],rating[good])"],
    "gsm8k": ["42", "The answer is 42.", "#### forty-two", "So #### 4 #### 5"],
    "sql": ["DROP TABLE t", "SELECT a FROM t; DROP TABLE t", "SELECT a\nFROM t",
            "SELECT name FROM t WHERE x = 'open", "select a from t"],
}


@pytest.mark.parametrize("name", sorted(GOLD))
def test_every_gold_target_follows_the_task_grammar(name):
    task = get_task(name)
    grammar = task.output_grammar()
    assert list(grammar) == ["regex"]  # one `structured_outputs` kind
    pattern = re.compile(grammar["regex"])
    examples, _ = task.load_examples(GOLD[name])
    assert examples
    assert [e.source for e in examples if not pattern.fullmatch(task.target(e))] == []
    assert [text for text in REJECTED[name] if pattern.fullmatch(text)] == []


def test_the_grammars_compile_with_vllms_default_backend():
    xgr = pytest.importorskip("xgrammar")  # vLLM's default structured-output backend
    for name in sorted(GOLD):
        xgr.Grammar.from_regex(get_task(name).output_grammar()["regex"])


def _viggo_server(n_free_right: int, n_constrained_right: int) -> tuple[FakeBehaviour, list]:
    task = get_task("viggo")
    examples, _ = task.load_examples(VIGGO)
    examples = examples[:10]
    prompt = task.structured_prompt
    free = {prompt(e): e.target for e in examples[:n_free_right]}
    bound = {prompt(e): e.target for e in examples[:n_constrained_right]}
    return FakeBehaviour(answers=free, constrained_answers=bound,
                         default_answer="request(name[Nothing])"), examples


def test_constrained_run_sends_the_grammar_and_reports_both_passes(tmp_path):
    behaviour, _ = _viggo_server(n_free_right=4, n_constrained_right=9)
    with run_fake_server(behaviour) as url:
        result = run_constrained_accuracy(
            AccuracyConfig(task="viggo", data=VIGGO, limit=10),
            ClientConfig(base_url=url, model="tuned", concurrency=3), tmp_path, progress=False)
    grammar = get_task("viggo").output_grammar()
    constrained = [b for b in behaviour.bodies if "structured_outputs" in b]
    free = [b for b in behaviour.bodies if "structured_outputs" not in b]
    # 10 examples per pass, plus the one-token check that the server takes the grammar.
    assert len(free) == 10 and len(constrained) == 11
    assert all(b["structured_outputs"] == grammar for b in constrained)
    assert [b["max_tokens"] for b in constrained].count(1) == 1
    passes = result["passes"]
    assert passes["unconstrained"]["metrics"]["exact_match"]["value"] == 0.4
    assert passes["constrained"]["metrics"]["exact_match"]["value"] == 0.9
    test = result["mcnemar"]["exact_match"]
    # 5 examples right only when constrained, none the other way: p = 2 * 0.5**5.
    assert (test["only_a"], test["only_b"]) == (0, 5)
    assert test["p_value"] == pytest.approx(0.0625)
    assert "attribute_f1" not in result["mcnemar"]  # a mean metric: no binary test
    report = (tmp_path / "report.md").read_text()
    assert "| exact_match | 0.400 [" in report and "| 0.900 [" in report and "| 0.0625 |" in report
    assert json.loads((tmp_path / "results.json").read_text())["grammar"] == grammar
    for name in ("unconstrained", "constrained"):
        run = json.loads((tmp_path / name / "results.json").read_text())
        assert run["config"]["constrained"] == (name == "constrained")
    assert (tmp_path / "compare.png").stat().st_size > 0


def test_cli_prints_both_passes(tmp_path, capsys):
    behaviour, _ = _viggo_server(n_free_right=2, n_constrained_right=3)
    with run_fake_server(behaviour) as url:
        code = main(["eval", "accuracy", "--task", "viggo", "--data", str(VIGGO), "--limit", "5",
                     "--base-url", url, "--model", "tuned", "--out", str(tmp_path),
                     "--constrained"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "exact_match: unconstrained 0.400" in out and "| constrained 0.600" in out
    assert "McNemar p=" in out


def test_a_server_that_refuses_the_grammar_fails_in_one_line(tmp_path, capsys):
    behaviour, _ = _viggo_server(n_free_right=4, n_constrained_right=9)
    behaviour.refuse_structured = True
    with run_fake_server(behaviour) as url:
        code = main(["eval", "accuracy", "--task", "viggo", "--data", str(VIGGO), "--limit", "5",
                     "--base-url", url, "--model", "tuned", "--out", str(tmp_path),
                     "--constrained"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "refused the viggo output grammar (400" in err and "structured outputs" in err
    # Stopped at the check: no example was sent, constrained or not.
    assert len(behaviour.bodies) == 1 and "structured_outputs" in behaviour.bodies[0]
