"""GSM8K strict and flexible answer extraction on hand-made cases."""

from decimal import Decimal

import pytest

from eval.tasks import get_task, gsm8k
from eval.tasks.records import TaskExample

GSM8K = get_task("gsm8k")


def _example(answer: str = "48/2 = 24\n48+24 = 72\n#### 72") -> TaskExample:
    return TaskExample(inputs={"question": "How many clips?"}, target=answer, source="g.jsonl:1")


def test_marked_answer_is_strict_and_flexible_match():
    result = GSM8K.score("She sold 24 in May, so 72.\n#### 72", _example())
    assert result.values == {"strict_match": 1.0, "flexible_match": 1.0}


def test_last_number_without_marker_is_only_flexible():
    result = GSM8K.score("She sold 48 + 24 = 72", _example())
    assert result.values == {"strict_match": 0.0, "flexible_match": 1.0}
    assert result.errors == {"strict_match": "no_marker"}


def test_marker_right_but_trailing_number_wrong_is_only_strict():
    result = GSM8K.score("#### 72\nCheck: 72 - 24 = 48", _example())
    assert result.values == {"strict_match": 1.0, "flexible_match": 0.0}


def test_number_formats_are_normalised():
    example = _example("... #### 1200")
    for text in ("#### 1,200", "#### $1,200.00", "####1200", "The total is $1,200."):
        assert GSM8K.score(text, example).values["flexible_match"] == 1.0, text
    assert gsm8k.strict_answer("#### -3.50") == Decimal("-3.5")


def test_zero_is_a_real_answer():
    result = GSM8K.score("#### 0", _example("#### 0"))
    assert result.values == {"strict_match": 1.0, "flexible_match": 1.0}
    assert result.parsed == "0"


def test_wrong_and_missing_numbers_score_zero():
    assert GSM8K.score("#### 71", _example()).values == {"strict_match": 0.0, "flexible_match": 0.0}
    result = GSM8K.score("I cannot solve this.", _example())
    assert result.values == {"strict_match": 0.0, "flexible_match": 0.0}
    assert result.errors == {"strict_match": "no_marker", "flexible_match": "no_number"}


def test_gold_without_marker_raises():
    with pytest.raises(ValueError, match="g.jsonl:1"):
        GSM8K.score("#### 1", _example("seventy-two"))
