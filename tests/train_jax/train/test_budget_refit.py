"""Re-fitting a budgeted run's length from the steps timed after the fix, on a made-up clock:
slower steps shorten the plan so the decay still ends inside the budget, faster ones lengthen
it up to the cap, small drifts keep it (a change costs a compile), and nothing moves once the
decay has started or rates already taken would change."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from train_jax.config.run_config import run_config_from_dict
from train_jax.train import budget_refit
from train_jax.train.budget_probe import BudgetCosts
from train_jax.train.budget_refit import BudgetRefit
from train_jax.train.optimizer import learning_rate_schedule
from train_jax.train.schedule_plan import PlannedState, SchedulePlan, budget_plan

FIXED_AT, CAP = 6, 400


class Clock:
    """A settable clock: the test says what time it is."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Feed:
    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass


def _cfg(eval_every: int = 10, checkpoint_every: int = 1000):
    return run_config_from_dict({
        "model": {"architecture": {"model_type": "llama"}, "tokenizer": "tok"},
        "data": {"sources": [{"dataset": {"task": "viggo", "train_file": "x.csv"}}]},
        "optimizer": {"schedule": "wsd", "warmup_steps": 2, "min_lr_ratio": 0.1},
        "eval": {"every": eval_every}, "checkpoint": {"every": checkpoint_every},
        "train": {"steps": CAP, "time_budget_minutes": 10}})


@pytest.fixture(autouse=True)
def _no_device(monkeypatch):
    monkeypatch.setattr(budget_refit.jax, "block_until_ready", lambda tree: tree)


def _fixed_run(total: int, *, eval_every: int = 10, compile_s: float = 5.0,
               deadline: float = 600.0):
    """A run whose probe fixed `total` steps at step 6 (time 60), with a 1 s/step probe."""
    cfg = _cfg(eval_every)
    planned = PlannedState(_Feed(), budget_plan(cfg.optimizer, total, FIXED_AT))
    clock = Clock()
    clock.now = 60.0
    costs = BudgetCosts(1.0, compile_s, eval_s=3.0, eval_every=eval_every)
    return BudgetRefit(cfg, planned, clock, deadline, FIXED_AT, costs, CAP), planned, clock


def _train(refit: BudgetRefit, clock: Clock, start: int, end: int, step_s: float,
           eval_s: float = 2.0) -> None:
    """Steps `start`+1 .. `end` at `step_s` each, with the evaluations the cadence triggers."""
    for step in range(start + 1, end + 1):
        clock.now += step_s
        if step % refit.every == 0:
            clock.now += eval_s
            refit.spent("eval", eval_s)


def test_slower_steps_shorten_the_plan_so_its_decay_ends_inside_the_budget(caplog):
    refit, planned, clock = _fixed_run(400)  # as a 1 s/step probe fixed it
    clock.now += 5.0  # the first step after the fix compiles for the fixed plan
    _train(refit, clock, FIXED_AT, 10, step_s=1.6)
    with caplog.at_level(logging.INFO):
        plan = refit.refit(10, state=None)
    assert plan is not None and planned.plan == plan
    assert 10 <= plan.decay_start < plan.total_steps < 400
    # The run from here, at the measured 1.6 s/step and 2 s per evaluation, plus the compile
    # for the new plan, fits the time left; one step more would not.
    measured = BudgetCosts(1.6, 5.0, 2.0, 10)
    left = refit.deadline - clock.now
    assert measured.seconds(10, plan.total_steps) <= left < measured.seconds(10, plan.total_steps + 1)
    assert "re-fitted to the time budget at step 10 (400 -> " in caplog.text


def test_evaluations_saves_and_the_compile_are_not_counted_as_step_time():
    refit, _, clock = _fixed_run(300)
    clock.now += 5.0  # compile
    _train(refit, clock, FIXED_AT, 20, step_s=1.0, eval_s=30.0)
    clock.now += 12.0
    refit.spent("save", 12.0)
    costs = refit.measured(clock.now, 20)
    assert costs.step_s == pytest.approx(1.0)
    assert costs.eval_s == pytest.approx(30.0) and costs.checkpoint_s == pytest.approx(12.0)


def test_faster_steps_lengthen_the_plan_up_to_the_cap():
    refit, planned, clock = _fixed_run(200, deadline=2000.0)
    clock.now += 5.0
    _train(refit, clock, FIXED_AT, 10, step_s=0.5)
    plan = refit.refit(10, state=None)
    assert plan is not None and planned.plan.total_steps == plan.total_steps == CAP  # would fit more; train.steps caps it


def test_a_drift_within_the_tolerance_keeps_the_plan_and_its_compiled_step():
    # A deadline that a 100-step plan fits, at the measured 1.01 s/step, with 2 steps to spare:
    # within the tolerance (2% of 100 steps), so no recompile.
    refit, planned, clock = _fixed_run(100, deadline=60.0 + 5.0 + 94 * 1.0 + 10 * 2.0 + 10.0)
    clock.now += 5.0
    _train(refit, clock, FIXED_AT, 10, step_s=1.01)
    assert refit.refit(10, state=None) is None
    assert planned.plan.total_steps == 100


def test_no_refit_off_the_cadence_or_once_the_decay_has_started():
    refit, planned, clock = _fixed_run(100)
    clock.now += 5.0
    _train(refit, clock, FIXED_AT, 9, step_s=3.0)
    assert not refit.due(9) and refit.refit(9, state=None) is None  # not an evaluation step
    decay_start = planned.plan.decay_start  # 80 for 100 wsd steps
    _train(refit, clock, 9, decay_start + 10, step_s=3.0)
    assert refit.refit(decay_start + 10, state=None) is None  # the decay has started: it stays
    assert planned.plan.total_steps == 100


@pytest.mark.parametrize(("total", "step_s"), [(150, 4.0), (60, 0.3)])  # shorter, longer
def test_a_refit_keeps_every_rate_already_taken(total, step_s):
    refit, planned, clock = _fixed_run(total)
    before = planned.plan
    clock.now += 5.0
    _train(refit, clock, FIXED_AT, 20, step_s=step_s)
    plan = refit.refit(20, state=None)
    assert plan is not None and plan.decay_start >= 20
    assert (plan.total_steps < total) == (step_s > 1.0)
    opt = refit.cfg.optimizer
    old = learning_rate_schedule(opt, before.total_steps, before.decay_start)
    new = learning_rate_schedule(opt, plan.total_steps, plan.decay_start)
    np.testing.assert_array_equal([float(old(i)) for i in range(20)],
                                  [float(new(i)) for i in range(20)])
    assert float(new(plan.total_steps)) == pytest.approx(opt.learning_rate * opt.min_lr_ratio)


def test_without_evaluations_the_checkpoints_are_the_refit_points():
    refit = BudgetRefit(_cfg(eval_every=0, checkpoint_every=25), PlannedState(
        _Feed(), SchedulePlan(300, 240, "budget", FIXED_AT)), Clock(), 600.0, FIXED_AT,
        BudgetCosts(1.0), CAP)
    assert [s for s in range(1, 120) if refit.due(s)] == [25, 50, 75, 100]
