"""Text-to-SQL in the sql-create-context format: question + CREATE TABLE context -> SQL."""

from __future__ import annotations

import re

import sqlglot

from eval.tasks import sql_exec
from eval.tasks.records import TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task

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
    return " ".join(_first_statement(text[start.start():]).split())


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
    """Text-to-SQL: the user turn holds the schema (``context``) and the ``question``."""

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
        Metric("execution_match", "binary", "same result rows as gold on seeded synthetic "
               "SQLite databases built from the schema"),
    )

    def user_text(self, example: TaskExample) -> str:
        """Schema first, then the question: the question is what the answer must follow."""
        return f"Schema:\n{example.inputs['context']}\nQuestion: {example.inputs['question']}"

    def parse(self, output: str) -> str | None:
        """The query in `output` (see `extract_sql`); None when there is none."""
        return extract_sql(output) or None

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Score a model output against the gold query of `example` (text and execution)."""
        gold = example.target
        query = self.parse(prediction)
        if query is None:
            values = {"exact_match": 0.0, "execution_match": 0.0}
            return ExampleScore(values=values, parsed=None,
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
        outcome = sql_exec.execution_match(query, gold, example.inputs["context"])
        if outcome.error:
            errors["execution_match"] = outcome.error
        execution = None if outcome.match is None else float(outcome.match)
        return ExampleScore(values={"exact_match": exact, "execution_match": execution},
                            parsed=query, errors=errors)


TASK = SqlTask()
