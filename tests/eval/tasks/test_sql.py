"""SQL scorer: normalised exact match and execution match on hand-made cases."""

import pytest

from eval.tasks import get_task, sql, sql_exec
from eval.tasks.records import TaskExample

SQL = get_task("sql")

PLAYERS = "CREATE TABLE players (name VARCHAR, school VARCHAR, no VARCHAR, points INTEGER)"
SPIDER = ("CREATE TABLE station (id INTEGER, name TEXT, city TEXT, PRIMARY KEY (id)); "
          "CREATE TABLE status (station_id INTEGER, bikes_available INTEGER, "
          "FOREIGN KEY (station_id) REFERENCES station(id))")


def _example(gold: str, context: str = PLAYERS) -> TaskExample:
    return TaskExample(inputs={"question": "q", "context": context}, target=gold, source="s:1")


def test_extract_sql_from_fences_prose_and_semicolons():
    assert sql.extract_sql("```sql\nSELECT a\nFROM t;\n```") == "SELECT a FROM t"
    assert sql.extract_sql("The query is: SELECT a FROM t; -- done") == "SELECT a FROM t"
    assert sql.extract_sql("SELECT a FROM t WHERE b = 'x; y'") == "SELECT a FROM t WHERE b = 'x; y'"
    assert sql.extract_sql("SELECT a FROM t\n\nExplanation: ...") == "SELECT a FROM t"
    assert sql.extract_sql("I don't know") == ""
    # Whitespace inside a literal is data (a Spider gold title has two spaces).
    assert sql.extract_sql("SELECT a\n  FROM t WHERE b = 'x ,  y'") == \
        "SELECT a FROM t WHERE b = 'x ,  y'"


def test_exact_match_ignores_case_and_spacing_of_keywords_and_identifiers():
    example = _example("SELECT name FROM players WHERE points > 10")
    result = SQL.score("select NAME from Players where points>10;", example)
    assert result.values == {"exact_match": 1.0, "execution_match": 1.0}


def test_different_text_same_rows_is_execution_match_only():
    example = _example("SELECT name FROM players WHERE points > 10")
    for equivalent in ("SELECT name FROM players WHERE 10 < points",
                       "SELECT name FROM players WHERE points >= 11",
                       "SELECT p.name FROM players AS p WHERE NOT p.points <= 10"):
        result = SQL.score(equivalent, example)
        assert result.values == {"exact_match": 0.0, "execution_match": 1.0}, equivalent


def test_count_forms_and_join_rewrites_agree():
    example = _example("SELECT count(*) FROM players WHERE school = 'vanderbilt'")
    assert SQL.score("SELECT COUNT(1) FROM players WHERE school = 'vanderbilt'",
                     example).values["execution_match"] == 1.0
    join = _example("SELECT T1.name FROM station AS T1 JOIN status AS T2 ON T1.id = T2.station_id "
                    "WHERE T2.bikes_available > 5", SPIDER)
    subquery = ("SELECT name FROM station, status WHERE station.id = status.station_id "
                "AND status.bikes_available > 5")
    assert SQL.score(subquery, join).values["execution_match"] == 1.0


@pytest.mark.parametrize("look_alike", [
    "SELECT name FROM players WHERE points >= 10",   # boundary row differs
    "SELECT name FROM players WHERE points < 10",
    "SELECT school FROM players WHERE points > 10",  # other column
    "SELECT DISTINCT name FROM players WHERE points > 10 LIMIT 1",
    "SELECT name FROM players WHERE points > 10 AND school = 'vanderbilt'",
])
def test_look_alike_queries_that_differ_do_not_match(look_alike):
    example = _example("SELECT name FROM players WHERE points > 10")
    assert SQL.score(look_alike, example).values["execution_match"] == 0.0


def test_string_literal_mismatch_and_count_variants_differ():
    example = _example("SELECT name FROM players WHERE school = 'vanderbilt'")
    assert SQL.score("SELECT name FROM players WHERE school = 'Vanderbilt'",
                     example).values["execution_match"] == 0.0
    counted = _example("SELECT count(*) FROM players")
    # The synthetic rows include NULLs, so COUNT(column) and COUNT(*) differ.
    assert SQL.score("SELECT count(school) FROM players", counted).values["execution_match"] == 0.0


def test_order_matters_only_when_gold_orders():
    unordered = _example("SELECT name FROM players WHERE points > 3")
    assert SQL.score("SELECT name FROM players WHERE points > 3 ORDER BY name DESC",
                     unordered).values["execution_match"] == 1.0
    ordered = _example("SELECT name FROM players ORDER BY points ASC, name ASC")
    assert SQL.score("SELECT name FROM players ORDER BY points DESC, name DESC",
                     ordered).values["execution_match"] == 0.0


@pytest.mark.parametrize(("prediction", "kind"), [
    ("SELECT name FROM players WHERE", "syntax_error"),
    ("SELECT nme FROM players", "no_such_column"),
    ("SELECT name FROM player", "no_such_table"),
    ("SELECT name FROM players WHERE school = 'x", "syntax_error"),
])
def test_unparsable_or_failing_sql_is_wrong_and_counted_by_kind(prediction, kind):
    result = SQL.score(prediction, _example("SELECT name FROM players"))
    assert result.values["execution_match"] == 0.0
    assert result.errors["execution_match"] == kind


def test_unparsable_prediction_is_a_parse_error_for_exact_match():
    result = SQL.score("SELECT name FROM players WHERE", _example("SELECT name FROM players"))
    assert result.values["exact_match"] == 0.0
    assert result.errors["exact_match"] == "parse_error"


def test_no_sql_in_output():
    result = SQL.score("Sorry, I cannot help.", _example("SELECT name FROM players"))
    assert result.values == {"exact_match": 0.0, "execution_match": 0.0}
    assert result.errors == {"exact_match": "no_sql", "execution_match": "no_sql"}


def test_gold_that_fails_is_not_scorable_for_execution():
    result = SQL.score("SELECT name FROM players", _example("SELECT nope FROM players"))
    assert result.values["execution_match"] is None
    assert result.errors["execution_match"] == "gold_execution_error"


def test_runaway_query_times_out():
    conn = sql_exec.build_database(PLAYERS, "SELECT 1", seed=0)
    runaway = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
               "SELECT count(*) FROM n")
    with pytest.raises(sql_exec.SqlExecutionError) as info:
        sql_exec.run_query(conn, runaway, timeout_s=0.2)
    assert info.value.kind == "timeout"


def test_database_is_deterministic_and_holds_gold_literals():
    gold = "SELECT name FROM players WHERE school = 'vanderbilt' AND points > 17"
    pools = sql_exec.harvest_literals(gold)
    assert pools == {"school": ["vanderbilt"], "points": [17, 18, 16]}
    first = sql_exec.build_database(PLAYERS, gold, seed=3).execute("SELECT * FROM players")
    second = sql_exec.build_database(PLAYERS, gold, seed=3).execute("SELECT * FROM players")
    rows = first.fetchall()
    assert rows == second.fetchall()
    assert any(row[1] == "vanderbilt" for row in rows)
    # Gold finds rows, so a query that returns nothing cannot pass by accident.
    assert not sql_exec.execution_match(gold, gold, PLAYERS).gold_rows_empty


def test_double_quoted_strings_are_harvested():
    pools = sql_exec.harvest_literals('SELECT a FROM t WHERE b = "Spain" AND c LIKE "%foo%"')
    assert pools == {"b": ["Spain"], "c": ["foo"]}
