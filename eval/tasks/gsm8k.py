"""GSM8K: grade-school math word problem -> worked answer ending in ``#### <number>``."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from eval.tasks.records import DataFormatError, TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task

# A number as people write it: optional sign and $, thousands commas, optional decimals.
_NUMBER = r"-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_STRICT = re.compile(r"####\s*(" + _NUMBER + r")")
_ANY_NUMBER = re.compile(_NUMBER)
# The answer shape for constrained decoding: worked text without '#', then the marker and the
# number on the last line (commas and decimals as in _NUMBER, no '$': GSM8K's golds have none).
ANSWER_REGEX = r"[^#]*#### -?[0-9]+(,[0-9]{3})*(\.[0-9]+)?"


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


class Gsm8kTask(Task):
    """GSM8K: the user turn is the ``question``, the target the worked ``answer``."""

    name = "gsm8k"
    input_fields = ("question",)
    target_field = "answer"
    instruction = (
        "Solve the grade-school math problem. Reason step by step, then give the final answer "
        "on its own last line in the form '#### <number>'."
    )
    max_new_tokens = 512
    metrics = (
        Metric("strict_match", "binary", "the number after '####' equals the gold answer"),
        Metric("flexible_match", "binary", "the last number in the output equals the gold answer"),
    )

    def parse(self, output: str) -> str | None:
        """The number after ``####``, else the last number in `output`; None if there is none."""
        shown = strict_answer(output)
        if shown is None:
            shown = flexible_answer(output)
        return format(shown, "f") if shown is not None else None

    def follows_format(self, prediction: str) -> bool:
        """The answer is shown as asked: a number after a ``####`` marker."""
        return strict_answer(prediction) is not None

    def output_grammar(self) -> dict[str, str]:
        """A worked answer ending in ``#### <number>`` (the number ends the output)."""
        return {"regex": ANSWER_REGEX}

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Score a worked answer against the gold ``#### <number>`` of `example`."""
        gold = strict_answer(example.target)
        if gold is None:
            raise DataFormatError(example.source or "<example>", 0,
                                  "gold answer has no '#### <number>'")
        strict, flexible = strict_answer(prediction), flexible_answer(prediction)
        errors: dict[str, str] = {}
        if strict is None:
            errors["strict_match"] = "no_marker"
        if flexible is None:
            errors["flexible_match"] = "no_number"
        values = {
            "strict_match": float(strict is not None and strict == gold),
            "flexible_match": float(flexible is not None and flexible == gold),
        }
        return ExampleScore(values=values, parsed=self.parse(prediction), errors=errors)


TASK = Gsm8kTask()
