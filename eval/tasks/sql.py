"""Text-to-SQL in the sql-create-context format: question + CREATE TABLE context -> SQL.

Rows may name their database (``db_id``): a row whose database is in the task's database
directory (`SqlTask.db_dir`; default: the Spider databases shipped in data/sql/spider_db) is
judged by execution on that real database, any other row on synthetic databases built from its
schema. The two are reported apart (the execution metric's groups ``real_db`` and
``synthetic_db``).
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlglot

from eval.tasks import sql_exec
from eval.tasks.records import DataFormatError, RawRow, TaskExample, convert_rows, require_text
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.sql_databases import check_db_dir, find_database, shipped_db_dir
from eval.tasks.sql_grammar import sql_output_grammar
from eval.tasks.task import Task

REAL_DB = "real_db"
SYNTHETIC_DB = "synthetic_db"
DB_ID_FIELD = "db_id"

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_QUERY_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)


def extract_sql(text: str) -> str:
    """The query in a model output: a fenced block if any, else from the first SELECT/WITH.

    The query ends at the first ``;`` or blank line; empty string when there is none.
    """
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = _QUERY_START.search(text)
    if start is None:
        return ""
    return _collapse_whitespace(_first_statement(text[start.start():]))


def _collapse_whitespace(text: str) -> str:
    """Runs of whitespace outside quotes become one space; quoted text is kept as written
    (a literal such as ``'a  b'`` is data, and must reach the database unchanged)."""
    out: list[str] = []
    quote: str | None = None
    for char in text.strip():
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"`":
            quote = char
        elif char.isspace():
            if out and out[-1] == " ":
                continue
            char = " "
        out.append(char)
    return "".join(out)


def _first_statement(text: str) -> str:
    """`text` up to the first ``;`` or blank line outside quotes."""
    quote: str | None = None
    for pos, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"`":
            quote = char
        elif char == ";" or (char == "\n" and re.match(r"\n[ \t]*\n", text[pos:])):
            return text[:pos]
    return text


class SqlParseError(ValueError):
    """sqlglot cannot parse a query."""


def normalise_sql(query: str) -> str:
    """Canonical text of `query` (SQLite dialect): keywords upper, identifiers lower, spacing."""
    try:
        tree = sqlglot.parse_one(query, read="sqlite")
    except sqlglot.errors.SqlglotError as exc:
        raise SqlParseError(str(exc).splitlines()[0]) from exc
    if tree is None:
        raise SqlParseError("empty query")
    return tree.sql(dialect="sqlite", normalize=True)


class SqlTask(Task):
    """Text-to-SQL: the user turn holds the schema (``context``) and the ``question``.

    `db_dir`: the directory of real databases (``<db_id>.sqlite`` or
    ``<db_id>/<db_id>.sqlite``); None judges every row on synthetic databases. Raises
    `DatabaseDirError` when a given directory holds no databases.
    """

    name = "sql"
    input_fields = ("question", "context")
    target_field = "answer"
    instruction = (
        "You are a text-to-SQL model. Given the database schema (CREATE TABLE statements) and "
        "a question, write one SQLite query that answers the question. Answer with the SQL "
        "query only."
    )
    max_new_tokens = 256
    metrics = (
        Metric("exact_match", "binary", "query text equal after sqlglot normalisation"),
        Metric("execution_match", "binary", "same result rows as gold: on the row's real "
               "database when the database directory has its db_id, else on seeded synthetic "
               "SQLite databases built from the schema", groups=(REAL_DB, SYNTHETIC_DB)),
    )

    def __init__(self, db_dir: str | Path | None = None):
        self.db_dir = None if db_dir is None else check_db_dir(db_dir)

    def load_examples(
        self, path: str | Path, *, skip_bad_rows: bool = False
    ) -> tuple[list[TaskExample], list[DataFormatError]]:
        """As `Task.load_examples`, keeping a row's optional ``db_id`` (in `TaskExample.extra`)."""

        def example(row: RawRow) -> TaskExample:
            inputs = {name: require_text(row, name) for name in self.input_fields}
            has_db_id = DB_ID_FIELD in row.data
            extra = {DB_ID_FIELD: require_text(row, DB_ID_FIELD)} if has_db_id else {}
            return TaskExample(inputs=inputs, target=require_text(row, self.target_field),
                               source=f"{row.path}:{row.line}", extra=extra)

        return convert_rows(path, example, skip_bad_rows=skip_bad_rows)

    def database_of(self, example: TaskExample) -> Path | None:
        """The real database file `example` is judged on, or None (synthetic databases)."""
        db_id = example.extra.get(DB_ID_FIELD)
        if self.db_dir is None or not db_id:
            return None
        return find_database(self.db_dir, db_id)

    def user_text(self, example: TaskExample) -> str:
        """Schema first, then the question: the question is what the answer must follow."""
        return f"Schema:\n{example.inputs['context']}\nQuestion: {example.inputs['question']}"

    def parse(self, output: str) -> str | None:
        """The query in `output` (see `extract_sql`); None when there is none."""
        return extract_sql(output) or None

    def output_grammar(self) -> dict[str, str]:
        """A single SELECT statement (`eval.tasks.sql_grammar`)."""
        return sql_output_grammar()

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Score a model output against the gold query of `example` (text and execution)."""
        gold = example.target
        database = self.database_of(example)
        groups = {"execution_match": SYNTHETIC_DB if database is None else REAL_DB}
        query = self.parse(prediction)
        if query is None:
            values = {"exact_match": 0.0, "execution_match": 0.0}
            return ExampleScore(values=values, parsed=None, groups=groups,
                                errors={"exact_match": "no_sql", "execution_match": "no_sql"})
        errors: dict[str, str] = {}
        try:
            gold_text = normalise_sql(gold)
        except SqlParseError:
            gold_text = " ".join(gold.split())
        try:
            exact: float = float(normalise_sql(query) == gold_text)
        except SqlParseError:
            exact = 0.0
            errors["exact_match"] = "parse_error"
        if database is None:
            outcome = sql_exec.execution_match(query, gold, example.inputs["context"])
        else:
            outcome = sql_exec.real_execution_match(query, gold, database)
        if outcome.error:
            errors["execution_match"] = outcome.error
        execution = None if outcome.match is None else float(outcome.match)
        return ExampleScore(values={"exact_match": exact, "execution_match": execution},
                            parsed=query, errors=errors, groups=groups)


TASK = SqlTask(shipped_db_dir())
