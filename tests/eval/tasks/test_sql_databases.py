"""SQL execution on the real (shipped) Spider databases: match, read-only, time limit, fallback,
and the held-out Spider validation split."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from eval.tasks import get_task, sql_exec
from eval.tasks.records import TaskExample
from eval.tasks.sql import REAL_DB, SYNTHETIC_DB, SqlTask
from eval.tasks.sql_databases import (
    SHIPPED_DB_DIR,
    DatabaseDirError,
    check_db_dir,
    find_database,
    open_read_only,
)

DATA = Path(__file__).resolve().parents[3] / "data" / "sql"
LOAN = SHIPPED_DB_DIR / "loan_1.sqlite"
GOLD = "SELECT bname FROM bank WHERE state = 'New York'"
SQL = get_task("sql")


def _example(gold: str, db_id: str | None, context: str = "") -> TaskExample:
    extra = {} if db_id is None else {"db_id": db_id}
    return TaskExample(inputs={"question": "q", "context": context}, target=gold, source="s:1",
                       extra=extra)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_task_runs_gold_on_the_real_database():
    assert SQL.db_dir == SHIPPED_DB_DIR and LOAN.is_file()
    right = SQL.score(GOLD, _example(GOLD, "loan_1"))
    assert right.values == {"exact_match": 1.0, "execution_match": 1.0}
    assert right.groups == {"execution_match": REAL_DB}
    # Same rows, other text: execution match only. A real row decides, not a synthetic one.
    same = SQL.score("SELECT b.bname FROM bank AS b WHERE b.state LIKE 'new york'",
                     _example(GOLD, "loan_1"))
    assert same.values == {"exact_match": 0.0, "execution_match": 1.0}


def test_a_wrong_query_mismatches_on_the_real_database():
    wrong = SQL.score("SELECT bname FROM bank WHERE state = 'Utah'", _example(GOLD, "loan_1"))
    assert wrong.values["execution_match"] == 0.0 and "execution_match" not in wrong.errors
    missing = SQL.score("SELECT bname FROM banks", _example(GOLD, "loan_1"))
    assert (missing.values["execution_match"], missing.errors["execution_match"]) == \
        (0.0, "no_such_table")


@pytest.mark.parametrize("statement", [
    "DROP TABLE bank",
    "INSERT INTO bank (branch_ID, bname) VALUES (99, 'x')",
    "UPDATE bank SET bname = 'x'",
    "DELETE FROM bank",
    "WITH b AS (SELECT 1) DELETE FROM bank",
    "CREATE TABLE t (a INTEGER)",
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA journal_mode = WAL",
])
def test_writes_are_refused_and_the_file_is_unchanged(statement, tmp_path):
    before = _sha256(LOAN)
    outcome = sql_exec.real_execution_match(statement, GOLD, LOAN)
    assert (outcome.match, outcome.error) == (False, "write_refused")
    assert _sha256(LOAN) == before
    # The file itself is opened read-only too: without the authorizer a write still fails
    # (on a copy, so a broken test cannot damage the shipped file). ATTACH of a new in-memory
    # database writes nothing to the file: only the authorizer refuses it.
    if statement.startswith("ATTACH"):
        return
    copy = Path(shutil.copy(LOAN, tmp_path / "loan_1.sqlite"))
    conn = open_read_only(copy)
    conn.set_authorizer(None)
    with pytest.raises(sql_exec.SqlExecutionError) as info:
        sql_exec.run_query(conn, statement)
    conn.close()
    assert info.value.kind == "write_refused" and _sha256(copy) == before


def test_a_runaway_query_times_out_on_the_real_database():
    runaway = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
               "SELECT count(*) FROM n")
    outcome = sql_exec.real_execution_match(runaway, GOLD, LOAN, timeout_s=0.2)
    assert (outcome.match, outcome.error) == (False, "timeout")


def test_rows_without_a_real_database_fall_back_to_synthetic_ones():
    context = "CREATE TABLE players (name VARCHAR, points INTEGER)"
    gold = "SELECT name FROM players WHERE points > 10"
    # No db_id, a WikiSQL id, a Spider id whose database is not shipped, a path-like id.
    for db_id in (None, "1-1000181-1", "baseball_1", "../spider_db/loan_1"):
        result = SQL.score(gold, _example(gold, db_id, context))
        assert result.groups == {"execution_match": SYNTHETIC_DB}, db_id
        assert result.values["execution_match"] == 1.0
    # Without a database directory even a shipped db_id runs on synthetic databases.
    spider = SqlTask(None).score(GOLD, _example(GOLD, "loan_1", (
        "CREATE TABLE bank (branch_ID INTEGER, bname VARCHAR, state VARCHAR)")))
    assert spider.groups == {"execution_match": SYNTHETIC_DB}


def test_spider_folder_layout_and_bad_directories(tmp_path):
    (tmp_path / "loan_1").mkdir()
    shutil.copy(LOAN, tmp_path / "loan_1" / "loan_1.sqlite")
    assert find_database(tmp_path, "loan_1") == tmp_path / "loan_1" / "loan_1.sqlite"
    result = SqlTask(tmp_path).score(GOLD, _example(GOLD, "loan_1"))
    assert (result.groups, result.values["execution_match"]) == ({"execution_match": REAL_DB}, 1.0)
    with pytest.raises(DatabaseDirError, match="not found"):
        check_db_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatabaseDirError, match="holds no .sqlite files"):
        SqlTask(tmp_path / "empty")


def test_load_examples_keeps_the_db_id():
    examples, _ = SQL.load_examples(DATA / "valid_spider.jsonl")
    assert examples[0].extra["db_id"] == json.loads(
        (DATA / "valid_spider.jsonl").read_text().splitlines()[0])["db_id"]


def test_held_out_spider_databases_are_not_in_train():
    def spider_db_ids(name: str) -> set[str]:
        rows = (json.loads(line) for line in (DATA / name).read_text().splitlines())
        return {row["db_id"] for row in rows if row["source"] == "spider"}

    held_out, train = spider_db_ids("valid_spider.jsonl"), spider_db_ids("train.jsonl")
    assert len(held_out) == 15 and not held_out & train
    assert all(find_database(SHIPPED_DB_DIR, db_id) for db_id in held_out)


def test_held_out_spider_gold_scores_full_marks_on_real_databases():
    examples, _ = SQL.load_examples(DATA / "valid_spider.jsonl")
    assert len(examples) == 661
    for example in examples:
        result = SQL.score(example.target, example)
        assert result.groups == {"execution_match": REAL_DB}, example.source
        assert result.values == {"exact_match": 1.0, "execution_match": 1.0}, (example.source,
                                                                                 result)
