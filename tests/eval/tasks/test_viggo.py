"""ViGGO parser and scorer on hand-made cases."""

import pytest

from eval.tasks import get_task, viggo
from eval.tasks.records import TaskExample

VIGGO = get_task("viggo")

GOLD = "give_opinion(name[SpellForce 3], release_year[2017], developer[Grimlore Games], rating[poor])"


def _example(target: str = GOLD) -> TaskExample:
    return TaskExample(inputs={"ref": "SpellForce 3 is bad."}, target=target, source="t.csv:2")


def test_identical_output_scores_full_marks():
    assert VIGGO.score(GOLD, _example()).values == {
        "exact_match": 1.0, "function_type": 1.0, "attribute_f1": 1.0}


def test_whitespace_and_surrounding_prose_are_ignored():
    prediction = "Here it is:\n give_opinion( name[SpellForce 3],release_year[2017], " \
                 "developer[Grimlore  Games], rating[poor] )\nThanks"
    result = VIGGO.score(prediction, _example())
    assert result.values["exact_match"] == 1.0
    assert result.parsed == GOLD


def test_attribute_order_counts_for_exact_match_but_not_for_f1():
    swapped = "give_opinion(name[SpellForce 3], rating[poor], release_year[2017], " \
              "developer[Grimlore Games])"
    result = VIGGO.score(swapped, _example())
    assert result.values == {"exact_match": 0.0, "function_type": 1.0, "attribute_f1": 1.0}


def test_partial_attributes_give_partial_f1():
    # 2 of 2 predicted are right (precision 1), 2 of 4 gold found (recall 0.5): F1 = 2/3.
    prediction = "inform(name[SpellForce 3], rating[poor])"
    result = VIGGO.score(prediction, _example())
    assert result.values["exact_match"] == 0.0
    assert result.values["function_type"] == 0.0
    assert result.values["attribute_f1"] == pytest.approx(2 / 3)


def test_wrong_value_is_a_wrong_pair():
    prediction = "give_opinion(name[SpellForce 3], release_year[2018], " \
                 "developer[Grimlore Games], rating[poor])"
    assert VIGGO.score(prediction, _example()).values["attribute_f1"] == pytest.approx(0.75)


def test_values_with_commas_parse_as_one_attribute():
    gold = "inform(name[Tomb Raider], genres[action-adventure, platformer, shooter])"
    mr = viggo.parse_mr(gold)
    assert mr is not None
    assert mr.attributes == (("name", "Tomb Raider"),
                             ("genres", "action-adventure, platformer, shooter"))


def test_longest_function_name_wins():
    mr = viggo.parse_mr("request_attribute(player_perspective[])")
    assert mr is not None and mr.function == "request_attribute"


def test_no_mr_in_output_is_wrong_with_error_kind():
    result = VIGGO.score("I am not sure what you mean.", _example())
    assert result.values == {"exact_match": 0.0, "function_type": 0.0, "attribute_f1": 0.0}
    assert result.parsed is None
    assert result.errors["exact_match"] == "no_mr"


def test_unclosed_mr_does_not_parse():
    assert viggo.parse_mr("inform(name[X], rating[good]") is None


def test_unparsable_gold_raises_naming_the_source():
    with pytest.raises(ValueError, match="t.csv:2"):
        VIGGO.score(GOLD, _example(target="not an mr"))
