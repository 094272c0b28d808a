"""GSM8K: grade-school math word problem -> worked answer ending in ``#### <number>``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from eval.tasks import prompting
from eval.tasks.records import DataFormatError, TaskExample, examples_from_file
from eval.tasks.scoring import ExampleScore, Metric

NAME = "gsm8k"
INPUT_FIELDS: tuple[str, ...] = ("question",)
TARGET_FIELD = "answer"

INSTRUCTION = (
    "Solve the grade-school math problem. Reason step by step, then give the final answer "
    "on its own last line in the form '#### <number>'."
)


def load_examples(
    path: str | Path, *, skip_bad_rows: bool = False
) -> tuple[list[TaskExample], list[DataFormatError]]:
    """Read a JSONL file with ``question`` and ``answer``."""
    return examples_from_file(path, INPUT_FIELDS, TARGET_FIELD, skip_bad_rows=skip_bad_rows)


def user_text(example: TaskExample) -> str:
    """What the user says: the problem."""
    return example.inputs["question"]


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

MAX_NEW_TOKENS = 512
METRICS: tuple[Metric, ...] = (
    Metric("strict_match", "binary", "the number after '####' equals the gold answer"),
    Metric("flexible_match", "binary", "the last number in the output equals the gold answer"),
)

# A number as people write it: optional sign and $, thousands commas, optional decimals.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_STRICT = re.compile(r"####\s*(" + _NUMBER + r")")
_ANY_NUMBER = re.compile(_NUMBER)


def _to_decimal(text: str) -> Decimal | None:
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "")
    try:
        return Decimal(cleaned).normalize()
    except InvalidOperation:
        return None


def strict_answer(text: str) -> Decimal | None:
    """The number right after the first ``####`` marker, or None."""
    match = _STRICT.search(text)
    return _to_decimal(match.group(1)) if match else None


def flexible_answer(text: str) -> Decimal | None:
    """The last number anywhere in `text`, or None."""
    numbers = _ANY_NUMBER.findall(text)
    return _to_decimal(numbers[-1]) if numbers else None


def score(prediction: str, example: TaskExample) -> ExampleScore:
    """Score a worked answer against the gold ``#### <number>`` of `example`."""
    gold = strict_answer(example.target)
    if gold is None:
        raise DataFormatError(example.source or "<example>", 0, "gold answer has no '#### <number>'")
    strict, flexible = strict_answer(prediction), flexible_answer(prediction)
    errors = {}
    if strict is None:
        errors["strict_match"] = "no_marker"
    if flexible is None:
        errors["flexible_match"] = "no_number"
    values = {
        "strict_match": float(strict is not None and strict == gold),
        "flexible_match": float(flexible is not None and flexible == gold),
    }
    shown = strict if strict is not None else flexible
    parsed = format(shown, "f") if shown is not None else None
    return ExampleScore(values=values, parsed=parsed, errors=errors)
