"""ViGGO: video-game sentence -> meaning representation, e.g. ``inform(name[X], rating[good])``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.tasks import prompting
from eval.tasks.records import DataFormatError, TaskExample, examples_from_file
from eval.tasks.scoring import ExampleScore, Metric

NAME = "viggo"
INPUT_FIELDS: tuple[str, ...] = ("ref",)
TARGET_FIELD = "mr"

FUNCTION_TYPES: tuple[str, ...] = (
    "inform", "request", "give_opinion", "confirm", "verify_attribute", "suggest",
    "request_explanation", "recommend", "request_attribute",
)
ATTRIBUTES: tuple[str, ...] = (
    "name", "exp_release_date", "release_year", "developer", "esrb", "rating", "genres",
    "player_perspective", "has_multiplayer", "platforms", "available_on_steam",
    "has_linux_release", "has_mac_release", "specifier",
)

# The instruction of the reference study, so untuned chat baselines are prompted as there.
INSTRUCTION = (
    "Given a target sentence construct the underlying meaning representation of the input "
    "sentence as a single function with attributes and attribute values. This function should "
    "describe the target string accurately and the function must be one of the following "
    f"{list(FUNCTION_TYPES)}. The attributes must be one of the following: {list(ATTRIBUTES)}. "
    "Answer with the meaning representation only."
)


def load_examples(
    path: str | Path, *, skip_bad_rows: bool = False
) -> tuple[list[TaskExample], list[DataFormatError]]:
    """Read a ViGGO CSV (columns ``mr``, ``ref``)."""
    return examples_from_file(path, INPUT_FIELDS, TARGET_FIELD, skip_bad_rows=skip_bad_rows)


def user_text(example: TaskExample) -> str:
    """What the user says: the sentence to analyse."""
    return example.inputs["ref"]


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

MAX_NEW_TOKENS = 128
METRICS: tuple[Metric, ...] = (
    Metric("exact_match", "binary", "whole meaning representation equal (whitespace-normalised)"),
    Metric("function_type", "binary", "function type (inform, request, ...) equal"),
    Metric("attribute_f1", "mean", "F1 over (attribute, value) pairs, order-insensitive"),
)

_FUNCTION_START = re.compile(r"\b(" + "|".join(sorted(FUNCTION_TYPES, key=len, reverse=True)) + r")\s*\(")
_ATTRIBUTE = re.compile(r"([A-Za-z_]+)\s*\[([^\]]*)\]")


@dataclass(frozen=True)
class MeaningRepresentation:
    """A parsed MR: function type and its (attribute, value) pairs in written order."""

    function: str
    attributes: tuple[tuple[str, str], ...]
    text: str  # the MR as written, whitespace-normalised around punctuation

    def render(self) -> str:
        """Canonical text: ``fn(attr[value], ...)`` with single spaces."""
        body = ", ".join(f"{name}[{value}]" for name, value in self.attributes)
        return f"{self.function}({body})"


def _normalise_value(value: str) -> str:
    return " ".join(value.split())


def parse_mr(text: str) -> MeaningRepresentation | None:
    """Parse the first meaning representation found in `text`, or None.

    The MR starts at a known function type followed by ``(`` and ends at the first ``)``
    outside square brackets, so surrounding prose from chat models is ignored.
    """
    match = _FUNCTION_START.search(text)
    if match is None:
        return None
    depth, end = 0, None
    for pos in range(match.end(), len(text)):
        char = text[pos]
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == ")" and depth == 0:
            end = pos
            break
    if end is None:
        return None
    body = text[match.end():end]
    attributes = tuple(
        (name.strip(), _normalise_value(value)) for name, value in _ATTRIBUTE.findall(body)
    )
    written = re.sub(r"\s*([(),\[\]])\s*", r"\1", _normalise_value(text[match.start():end + 1]))
    return MeaningRepresentation(function=match.group(1), attributes=attributes, text=written)


def attribute_f1(predicted: MeaningRepresentation | None, gold: MeaningRepresentation) -> float:
    """F1 between predicted and gold (attribute, value) sets; 1.0 when both are empty."""
    gold_set = set(gold.attributes)
    pred_set = set(predicted.attributes) if predicted else set()
    if not gold_set and not pred_set:
        return 1.0 if predicted is not None else 0.0
    true_pos = len(gold_set & pred_set)
    if true_pos == 0:
        return 0.0
    precision, recall = true_pos / len(pred_set), true_pos / len(gold_set)
    return 2 * precision * recall / (precision + recall)


def score(prediction: str, example: TaskExample) -> ExampleScore:
    """Score a model output against the gold MR of `example`."""
    gold = parse_mr(example.target)
    if gold is None:
        raise DataFormatError(example.source or "<example>", 0, f"gold MR does not parse: {example.target!r}")
    predicted = parse_mr(prediction)
    if predicted is None:
        values = {"exact_match": 0.0, "function_type": 0.0, "attribute_f1": 0.0}
        return ExampleScore(values=values, parsed=None, errors={m.name: "no_mr" for m in METRICS})
    values = {
        "exact_match": float(predicted.text == gold.text),
        "function_type": float(predicted.function == gold.function),
        "attribute_f1": attribute_f1(predicted, gold),
    }
    return ExampleScore(values=values, parsed=predicted.render())
