"""ViGGO: video-game sentence -> meaning representation, e.g. ``inform(name[X], rating[good])``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from eval.tasks.records import DataFormatError, TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task

FUNCTION_TYPES: tuple[str, ...] = (
    "inform", "request", "give_opinion", "confirm", "verify_attribute", "suggest",
    "request_explanation", "recommend", "request_attribute",
)
ATTRIBUTES: tuple[str, ...] = (
    "name", "exp_release_date", "release_year", "developer", "esrb", "rating", "genres",
    "player_perspective", "has_multiplayer", "platforms", "available_on_steam",
    "has_linux_release", "has_mac_release", "specifier",
)

# The MR shape for constrained decoding: a known function of known attributes, each with a
# bracketed value (possibly empty, as in ``request_attribute(player_perspective[])``).
_VALUE = r"[^\[\]\n]*"
_ATTR_ALT = "(" + "|".join(ATTRIBUTES) + ")"
MR_REGEX = (
    "(" + "|".join(FUNCTION_TYPES) + r")\(" + _ATTR_ALT + r"\[" + _VALUE + r"\]"
    + "(, " + _ATTR_ALT + r"\[" + _VALUE + r"\])*\)"
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


class ViggoTask(Task):
    """ViGGO: the user turn is the sentence (``ref``), the target its meaning representation."""

    name = "viggo"
    input_fields = ("ref",)
    target_field = "mr"
    # The instruction of the reference study, so untuned chat baselines are prompted as there.
    instruction = (
        "Given a target sentence construct the underlying meaning representation of the input "
        "sentence as a single function with attributes and attribute values. This function "
        "should describe the target string accurately and the function must be one of the "
        f"following {list(FUNCTION_TYPES)}. The attributes must be one of the following: "
        f"{list(ATTRIBUTES)}. Answer with the meaning representation only."
    )
    max_new_tokens = 128
    metrics = (
        Metric("exact_match", "binary",
               "whole meaning representation equal (whitespace-normalised)"),
        Metric("function_type", "binary", "function type (inform, request, ...) equal"),
        Metric("attribute_f1", "mean", "F1 over (attribute, value) pairs, order-insensitive"),
    )

    def parse(self, output: str) -> str | None:
        """The first MR in `output`, rendered canonically; None when there is none."""
        mr = parse_mr(output)
        return mr.render() if mr else None

    def output_grammar(self) -> dict[str, str]:
        """One meaning representation and nothing else: ``fn(attr[value], ...)`` with a
        known function type and known attributes."""
        return {"regex": MR_REGEX}

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Score a model output against the gold MR of `example`."""
        gold = parse_mr(example.target)
        if gold is None:
            raise DataFormatError(example.source or "<example>", 0,
                                  f"gold MR does not parse: {example.target!r}")
        predicted = parse_mr(prediction)
        if predicted is None:
            values = {"exact_match": 0.0, "function_type": 0.0, "attribute_f1": 0.0}
            return ExampleScore(values=values, parsed=None,
                                errors={m.name: "no_mr" for m in self.metrics})
        values = {
            "exact_match": float(predicted.text == gold.text),
            "function_type": float(predicted.function == gold.function),
            "attribute_f1": attribute_f1(predicted, gold),
        }
        return ExampleScore(values=values, parsed=predicted.render())


TASK = ViggoTask()
