"""`TimeBudget`, the wall-clock stop every training loop (SFT, DPO, GRPO) shares."""

from __future__ import annotations

import logging
import math

from train_jax.train.run_control import TimeBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_is_spent_only_after_its_minutes_and_says_at_which_step(caplog):
    clock = _Clock()
    budget = TimeBudget(2.0, clock)
    assert budget.deadline == 220.0
    clock.now = 220.0
    assert not budget.spent(7)  # exactly on the deadline: one more step is allowed
    clock.now = 220.5
    with caplog.at_level(logging.INFO, logger="train_jax.train.run_control"):
        assert budget.spent(8)
    assert "time budget of 2.0 min reached at step 8" in caplog.text


def test_no_budget_is_never_spent():
    clock = _Clock()
    budget = TimeBudget(None, clock)
    clock.now = 1e12
    assert budget.deadline == math.inf and not budget.spent(1)
