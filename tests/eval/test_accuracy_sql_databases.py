"""`jaxtune eval accuracy --task sql`: execution match reported apart on real and synthetic
databases (results.json, report.md, examples.jsonl), paired by `compare`, and `--db-dir`."""

import argparse
import json
import shutil
from pathlib import Path

import pytest

from eval import cli_accuracy, cli_compare
from eval.accuracy import AccuracyConfig, AccuracyConfigError, run_accuracy
from eval.client import ClientConfig
from eval.compare import run_compare
from eval.tasks import get_task
from eval.tasks.sql_databases import SHIPPED_DB_DIR, DatabaseDirError
from tests.eval.fake_server import FakeBehaviour, run_fake_server

DATA = Path(__file__).resolve().parents[2] / "data" / "sql"
SQL = get_task("sql")


@pytest.fixture
def mixed(tmp_path) -> Path:
    """4 held-out Spider rows (real databases) then 3 WikiSQL rows (synthetic ones)."""
    spider = (DATA / "valid_spider.jsonl").read_text().splitlines()[:4]
    wikisql = (DATA / "valid.jsonl").read_text().splitlines()[:3]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(spider + wikisql) + "\n")
    return path


def _run(data: Path, out: Path, right: list[int], model: str = "m") -> dict:
    examples, _ = SQL.load_examples(data)
    answers = {SQL.structured_prompt(examples[i]): examples[i].target for i in right}
    # The default answer names no table: it fails on every database (no_such_table).
    behaviour = FakeBehaviour(answers=answers, default_answer="SELECT x FROM no_table")
    with run_fake_server(behaviour) as url:
        return run_accuracy(AccuracyConfig(task="sql", data=data),
                            ClientConfig(base_url=url, model=model), out, progress=False)


def test_report_splits_real_and_synthetic_execution_match(mixed, tmp_path):
    summary = _run(mixed, tmp_path / "run", right=[0, 1, 2, 4])
    metrics = summary["metrics"]
    assert list(metrics) == ["exact_match", "execution_match", "execution_match_real_db",
                             "execution_match_synthetic_db"]
    real, synthetic = metrics["execution_match_real_db"], metrics["execution_match_synthetic_db"]
    assert (real["value"], real["n"], real["group"]) == (0.75, 4, "real_db")
    assert (synthetic["value"], synthetic["n"]) == (pytest.approx(1 / 3), 3)
    assert metrics["execution_match"]["n"] == 7
    assert real["low"] < 0.75 < real["high"] and real["method"] == "wilson"
    assert summary["errors_by_kind"]["execution_match_real_db"] == {"no_such_table": 1}
    assert summary["errors_by_kind"]["execution_match_synthetic_db"] == {"no_such_table": 2}
    assert summary["config"]["db_dir"] == str(SHIPPED_DB_DIR)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| execution_match_real_db | 0.750 |" in report
    assert "| execution_match_synthetic_db | 0.333 |" in report
    assert f"real databases: `{SHIPPED_DB_DIR}`" in report
    records = [json.loads(line)
               for line in (tmp_path / "run" / "examples.jsonl").read_text().splitlines()]
    assert [r["groups"]["execution_match"] for r in records] == ["real_db"] * 4 + \
        ["synthetic_db"] * 3
    assert [r["scores"]["execution_match_real_db"] for r in records] == \
        [1.0, 1.0, 1.0, 0.0, None, None, None]


def test_compare_pairs_the_group_metrics(mixed, tmp_path):
    base = tmp_path / "base"
    tuned = tmp_path / "tuned"
    _run(mixed, base, right=[0, 4], model="base")
    _run(mixed, tuned, right=[0, 1, 2, 3, 4], model="tuned")
    result = run_compare([base, tuned], None)
    (real,) = result["mcnemar"]["execution_match_real_db"]
    (synthetic,) = result["mcnemar"]["execution_match_synthetic_db"]
    assert (real["n_pairs"], real["only_a"], real["only_b"]) == (4, 0, 3)
    assert (synthetic["n_pairs"], synthetic["only_a"], synthetic["only_b"]) == (3, 0, 0)


def test_db_dir_is_checked_and_only_for_sql(tmp_path):
    data = DATA / "valid_spider.jsonl"
    with pytest.raises(AccuracyConfigError, match="--db-dir applies to --task sql only"):
        AccuracyConfig(task="gsm8k", data=data, db_dir=SHIPPED_DB_DIR)
    with pytest.raises(DatabaseDirError, match="database directory not found"):
        AccuracyConfig(task="sql", data=data, db_dir=tmp_path / "nope")
    assert AccuracyConfig(task="sql", data=data).resolved_db_dir == SHIPPED_DB_DIR
    assert AccuracyConfig(task="gsm8k", data=data).resolved_db_dir is None


def test_cli_db_dir_flag_runs_rows_on_that_directory(tmp_path, capsys):
    # A directory in Spider's own layout with one database: its rows run there, others synthetic.
    (tmp_path / "dbs" / "loan_1").mkdir(parents=True)
    shutil.copy(SHIPPED_DB_DIR / "loan_1.sqlite", tmp_path / "dbs" / "loan_1" / "loan_1.sqlite")
    lines = (DATA / "valid_spider.jsonl").read_text().splitlines()
    loan = [line for line in lines if json.loads(line)["db_id"] == "loan_1"][:2]
    other = [line for line in lines if json.loads(line)["db_id"] != "loan_1"][:1]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(loan + other) + "\n")
    parser = argparse.ArgumentParser()
    cli_accuracy.add_arguments(parser)
    assert "--db-dir" in parser.format_help()
    with run_fake_server(FakeBehaviour(default_answer="SELECT 1")) as url:
        args = parser.parse_args(["--task", "sql", "--data", str(data), "--base-url", url,
                                  "--model", "m", "--out", str(tmp_path / "out"),
                                  "--db-dir", str(tmp_path / "dbs")])
        assert cli_accuracy.run(args) == 0
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["metrics"]["execution_match_real_db"]["n"] == 2
    assert summary["metrics"]["execution_match_synthetic_db"]["n"] == 1
    assert "execution_match_real_db: 0.000" in capsys.readouterr().out


def test_compare_cli_prints_runs_with_an_empty_group(tmp_path, capsys):
    # WikiSQL rows only: the real-database group is empty (no value) in both runs.
    data = tmp_path / "wikisql.jsonl"
    data.write_text("\n".join((DATA / "valid.jsonl").read_text().splitlines()[:2]) + "\n")
    _run(data, tmp_path / "a", right=[0], model="base")
    _run(data, tmp_path / "b", right=[0, 1], model="tuned")
    parser = argparse.ArgumentParser()
    cli_compare.add_arguments(parser)
    assert cli_compare.run(parser.parse_args([str(tmp_path / "a"), str(tmp_path / "b"),
                                              "--out", str(tmp_path / "cmp")])) == 0
    out = capsys.readouterr().out
    assert "execution_match_real_db n/a" in out and "execution_match_synthetic_db 1.000" in out
