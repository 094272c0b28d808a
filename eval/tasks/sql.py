"""Text-to-SQL in the sql-create-context format: question + CREATE TABLE context -> SQL."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import sqlglot

from eval.tasks import prompting, sql_exec
from eval.tasks.records import DataFormatError, TaskExample, examples_from_file
from eval.tasks.scoring import ExampleScore, Metric

NAME = "sql"
INPUT_FIELDS: tuple[str, ...] = ("question", "context")
TARGET_FIELD = "answer"

INSTRUCTION = (
    "You are a text-to-SQL model. Given the database schema (CREATE TABLE statements) and a "
    "question, write one SQLite query that answers the question. Answer with the SQL query only."
)


def load_examples(
    path: str | Path, *, skip_bad_rows: bool = False
) -> tuple[list[TaskExample], list[DataFormatError]]:
    """Read a JSONL file with ``question``, ``context`` and ``answer``."""
    return examples_from_file(path, INPUT_FIELDS, TARGET_FIELD, skip_bad_rows=skip_bad_rows)


def user_text(example: TaskExample) -> str:
    """Schema first, then the question: the question is what the answer must follow."""
    return f"Schema:\n{example.inputs['context']}\nQuestion: {example.inputs['question']}"


def structured_prompt(example: TaskExample) -> str:
    """Structured-style prompt for `example`."""
    return prompting.structured_prompt(user_text(example))


def chat_messages(example: TaskExample, shots: Sequence[TaskExample] = ()) -> list[dict[str, str]]:
    """Chat-style messages for `example`, with optional few-shot examples."""
    return prompting.chat_messages(
        INSTRUCTION, user_text(example), [(user_text(s), s.target) for s in shots]
    )


# ---------------------------------------------------------------------------------------------
# Answer parser and scorer

MAX_NEW_TOKENS = 256
METRICS: tuple[Metric, ...] = (
    Metric("exact_match", "binary", "query text equal after sqlglot normalisation"),
    Metric("execution_match", "binary",
           "same result rows as gold on seeded synthetic SQLite databases built from the schema"),
)

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


def score(prediction: str, example: TaskExample) -> ExampleScore:
    """Score a model output against the gold query of `example` (text and execution)."""
    gold = example.target
    query = extract_sql(prediction)
    if not query:
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
