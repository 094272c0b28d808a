"""Parsing `--grid` into trials."""

import pytest

from infra.sweep.grid import GridError, parse_grid


def test_cartesian_product_in_stable_order_with_aliases() -> None:
    trials = parse_grid(["lr=1e-5,3e-5", "train.steps=10,20"])
    assert [t.override_args() for t in trials] == [
        ["optimizer.learning_rate=1e-5", "train.steps=10"],
        ["optimizer.learning_rate=1e-5", "train.steps=20"],
        ["optimizer.learning_rate=3e-5", "train.steps=10"],
        ["optimizer.learning_rate=3e-5", "train.steps=20"],
    ]
    assert [t.index for t in trials] == [0, 1, 2, 3]
    assert len({t.name for t in trials}) == 4
    assert trials[1].name == "t01_learning_rate-1e-5_steps-20"


@pytest.mark.parametrize("items, message", [
    (["lr"], "must look like key=value1,value2"),
    (["lr="], "must look like"),
    (["lr=1e-5,,3e-5"], "empty value"),
    (["lr=1e-5", "optimizer.learning_rate=2e-5"], "given twice"),
    ([], "at least one"),
])
def test_malformed_grids_are_rejected(items: list[str], message: str) -> None:
    with pytest.raises(GridError, match=message):
        parse_grid(items)
