"""Execution match for text-to-SQL: run gold and predicted queries and compare their rows.

On the row's real database when there is one (`real_execution_match`: Spider rows, whose
databases `eval.tasks.sql_databases` finds and opens read-only), else on synthetic ones
(`execution_match`). Most task data carries only the schema (CREATE TABLE statements), not
the rows, so such an example gets small in-memory databases filled with deterministic, seeded
synthetic rows.
Values are drawn so that the gold query's WHERE clauses can match: every literal the gold
query compares a column with (and its numeric neighbours, so ``>`` and ``>=`` differ) is in
that column's value pool, and the first row of each table takes the first literal of every
column. Integer columns draw from a small range so joins on keys find partners.

Results are compared as multisets of rows (as lists when the gold query has a top-level
ORDER BY). A prediction must match on every database to count. Every connection refuses
writes (an authorizer; the synthetic rows are inserted before it is installed) and every query
runs under a time limit, so a predicted query can neither change a database nor hang.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import sqlglot
from sqlglot import exp

from eval.tasks.sql_databases import open_read_only, refuse_writes

ROWS_PER_TABLE = 20
SEEDS: tuple[int, ...] = (0, 1, 2)
QUERY_TIMEOUT_S = 2.0
# Real databases hold up to a few MB (Spider's largest ~3.7 MB): more room than 20-row tables.
REAL_QUERY_TIMEOUT_S = 5.0
_HIT_PROBABILITY = 0.5  # chance a cell takes a value from its column's literal pool
_NULL_PROBABILITY = 0.05  # a few NULLs so COUNT(col) and COUNT(*) differ
_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike, exp.Glob)

Value = int | float | str | None


class SqlExecutionError(Exception):
    """A query failed on the synthetic database; `kind` names the failure class."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ExecutionOutcome:
    """Result of comparing a prediction with the gold query by execution.

    `match` is None when the example cannot be judged (the schema or the gold query fails);
    `error` names the failure kind (of the prediction, or ``gold_*`` for the gold side);
    `gold_rows_empty` tells that gold returned no rows on any database (a weak check).
    """

    match: bool | None
    error: str | None = None
    gold_rows_empty: bool = False


def _column_name(node: exp.Expression) -> str | None:
    return node.name.lower() if isinstance(node, exp.Column) else None


def _literal_value(node: exp.Expression) -> Value:
    """The value of a literal; a double-quoted identifier is a string in SQLite's fallback."""
    if isinstance(node, exp.Neg):
        inner = _literal_value(node.this)
        return -inner if isinstance(inner, (int, float)) else None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            number = float(node.this)
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in node.this else number
    if isinstance(node, exp.Column) and node.this.args.get("quoted") and not node.table:
        return node.name
    return None


def _pool_values(value: Value, *, like: bool) -> list[Value]:
    if value is None:
        return []
    if like and isinstance(value, str):
        return [value.replace("%", "").replace("_", " ")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value, value + 1, value - 1]
    return [value]


def harvest_literals(gold_sql: str) -> dict[str, list[Value]]:
    """Map lower-cased column name -> literals the gold query compares it with, in order."""
    pools: dict[str, list[Value]] = defaultdict(list)
    try:
        tree = sqlglot.parse_one(gold_sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return {}

    def add(column: str | None, value: Value, like: bool = False) -> None:
        if column is None:
            return
        for item in _pool_values(value, like=like):
            if item not in pools[column]:
                pools[column].append(item)

    for node in tree.find_all(*_COMPARISONS):
        left, right = node.this, node.expression
        like = isinstance(node, (exp.Like, exp.ILike, exp.Glob))
        if _column_name(left) is not None:
            add(_column_name(left), _literal_value(right), like)
        elif _column_name(right) is not None:
            add(_column_name(right), _literal_value(left), like)
    for node in tree.find_all(exp.Between):
        add(_column_name(node.this), _literal_value(node.args["low"]))
        add(_column_name(node.this), _literal_value(node.args["high"]))
    for node in tree.find_all(exp.In):
        for item in node.expressions:
            add(_column_name(node.this), _literal_value(item))
    return dict(pools)


def _affinity(declared_type: str) -> str:
    # SQLite's own affinity rules (datatype3.html, section 3.1), in its order.
    upper = declared_type.upper()
    if "INT" in upper:
        return "integer"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    if upper in ("", "BLOB"):
        return "text"
    return "numeric"


def _random_value(affinity: str, pool: list[Value], rng: random.Random) -> Value:
    numbers = [v for v in pool if isinstance(v, (int, float))]
    if numbers:
        # Spread around the literals the gold query compares with, so ranges select some rows.
        low, high = int(min(numbers)) - 3, int(max(numbers)) + 3
        return rng.randint(low, high) if affinity != "real" else round(rng.uniform(low, high), 1)
    if affinity == "integer":
        return rng.randint(1, 8)  # a small range so joins on keys find partners
    if affinity in ("real", "numeric"):
        return round(rng.uniform(0, 100), 1)
    return f"{rng.choice(_WORDS)} {rng.randint(1, 4)}"


def build_database(context: str, gold_sql: str, seed: int,
                   rows: int = ROWS_PER_TABLE) -> sqlite3.Connection:
    """An in-memory database with the tables of `context` and seeded synthetic rows; once
    filled, it refuses writes (`refuse_writes`)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(context)
    except sqlite3.Error as exc:
        conn.close()
        raise SqlExecutionError("gold_schema_error", f"schema does not build: {exc}") from exc
    pools = harvest_literals(gold_sql)
    everything = [value for values in pools.values() for value in values]
    rng = random.Random(seed)
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for table in tables:
        columns = [(row[1], _affinity(row[2] or "")) for row in
                   conn.execute(f'PRAGMA table_info("{table}")')]
        batch = []
        for row_index in range(rows):
            cells: list[Value] = []
            for name, affinity in columns:
                pool = pools.get(name.lower(), [])
                draw = rng.random()
                if row_index == 0 and pool:
                    cells.append(pool[0])
                elif pool and draw < _HIT_PROBABILITY:
                    cells.append(rng.choice(pool))
                elif draw > 1 - _NULL_PROBABILITY:
                    cells.append(None)
                elif everything and draw > 1 - _NULL_PROBABILITY - 0.1:
                    cells.append(rng.choice(everything))
                else:
                    cells.append(_random_value(affinity, pool, rng))
            batch.append(cells)
        placeholders = ", ".join("?" for _ in columns)
        try:
            conn.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', batch)
        except sqlite3.IntegrityError:
            # Key constraints (PRIMARY KEY, UNIQUE, NOT NULL): insert row by row, keep valid rows.
            for cells in batch:
                try:
                    conn.execute(f'INSERT INTO "{table}" VALUES ({placeholders})', cells)
                except sqlite3.IntegrityError:
                    continue
    return refuse_writes(conn)


_ERROR_KINDS = (
    ("no such table", "no_such_table"), ("no such column", "no_such_column"),
    ("no such function", "no_such_function"), ("syntax error", "syntax_error"),
    ("incomplete input", "syntax_error"), ("unrecognized token", "syntax_error"),
    ("interrupted", "timeout"), ("one statement at a time", "multiple_statements"),
    ("ambiguous column", "ambiguous_column"),
    # The authorizer ("not authorized") and the read-only file ("readonly database").
    ("not authorized", "write_refused"), ("readonly database", "write_refused"),
)


def _error_kind(exc: sqlite3.Error) -> str:
    message = str(exc).lower()
    for needle, kind in _ERROR_KINDS:
        if needle in message:
            return kind
    return "execution_error"


def run_query(conn: sqlite3.Connection, sql: str,
              timeout_s: float = QUERY_TIMEOUT_S) -> list[tuple[Value, ...]]:
    """Run one query with a time limit; raise `SqlExecutionError` with a failure kind."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Warning as exc:  # e.g. several statements in one string
        raise SqlExecutionError("multiple_statements", str(exc)) from exc
    except sqlite3.Error as exc:
        raise SqlExecutionError(_error_kind(exc), str(exc)) from exc
    finally:
        conn.set_progress_handler(None, 0)


def _canonical(rows: list[tuple[Value, ...]]) -> list[tuple[Value, ...]]:
    # Round floats so AVG computed in another order compares equal.
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def has_top_level_order(sql: str) -> bool:
    """True if the query's outermost SELECT has ORDER BY (then row order matters)."""
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return False
    return tree.args.get("order") is not None


def results_equal(gold: list[tuple[Value, ...]], predicted: list[tuple[Value, ...]],
                  *, ordered: bool) -> bool:
    """Compare result rows as lists (`ordered`) or as multisets."""
    gold_c, pred_c = _canonical(gold), _canonical(predicted)
    if ordered:
        return gold_c == pred_c
    return Counter(gold_c) == Counter(pred_c)


def _compare(conn: sqlite3.Connection, predicted_sql: str, gold_sql: str, *, ordered: bool,
             timeout_s: float) -> tuple[ExecutionOutcome | None, bool]:
    """Run gold then prediction on `conn`: (a final outcome or None if they agree, gold empty)."""
    try:
        gold_rows = run_query(conn, gold_sql, timeout_s)
    except SqlExecutionError:
        return ExecutionOutcome(match=None, error="gold_execution_error"), False
    try:
        predicted_rows = run_query(conn, predicted_sql, timeout_s)
    except SqlExecutionError as exc:
        return ExecutionOutcome(match=False, error=exc.kind), not gold_rows
    if not results_equal(gold_rows, predicted_rows, ordered=ordered):
        return ExecutionOutcome(match=False), not gold_rows
    return None, not gold_rows


def execution_match(predicted_sql: str, gold_sql: str, context: str,
                    seeds: tuple[int, ...] = SEEDS) -> ExecutionOutcome:
    """Run gold and prediction on one synthetic database per seed; match only if all agree."""
    ordered = has_top_level_order(gold_sql)
    all_empty = True
    for seed in seeds:
        try:
            conn = build_database(context, gold_sql, seed)
        except SqlExecutionError as exc:
            return ExecutionOutcome(match=None, error=exc.kind)
        try:
            outcome, empty = _compare(conn, predicted_sql, gold_sql, ordered=ordered,
                                      timeout_s=QUERY_TIMEOUT_S)
        finally:
            conn.close()
        all_empty = all_empty and empty
        if outcome is not None:
            return outcome if outcome.match is None else replace(outcome, gold_rows_empty=all_empty)
    return ExecutionOutcome(match=True, gold_rows_empty=all_empty)


def real_execution_match(predicted_sql: str, gold_sql: str, database: Path,
                         timeout_s: float = REAL_QUERY_TIMEOUT_S) -> ExecutionOutcome:
    """Run gold and prediction on the real database file `database` (read-only) and compare.

    Raises `sqlite3.Error` only if the file cannot be opened as a database.
    """
    conn = open_read_only(database)
    try:
        outcome, empty = _compare(conn, predicted_sql, gold_sql,
                                  ordered=has_top_level_order(gold_sql), timeout_s=timeout_s)
    finally:
        conn.close()
    if outcome is None:
        return ExecutionOutcome(match=True, gold_rows_empty=empty)
    return outcome if outcome.match is None else replace(outcome, gold_rows_empty=empty)
