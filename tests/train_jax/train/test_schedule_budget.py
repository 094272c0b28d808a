"""The time budget's step count from made-up step times (an injected clock, no real timing),
and the plan a run keeps: fixed once, stored in the checkpoint's data_state, reused on resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from train_jax.config.run_config import OptimizerConfig, run_config_from_dict
from train_jax.train.budget_probe import BudgetCosts, StepTimer, events_in, steps_within_budget
from train_jax.train.optimizer import learning_rate_schedule
from train_jax.train.schedule_plan import (
    PLAN_KEY,
    PlannedState,
    SchedulePlan,
    budget_plan,
    configured_plan,
    resumed_plan,
    starting_plan,
)


def _simulated_seconds(costs: BudgetCosts, start: int, end: int) -> float:
    """Walk the loop step by step: what a run from `start` to `end` spends (final save after)."""
    spent = costs.compile_s
    for step in range(start + 1, end + 1):
        spent += costs.step_s
        if costs.eval_every and (step % costs.eval_every == 0 or step == end):
            spent += costs.eval_s
        if costs.checkpoint_every and step % costs.checkpoint_every == 0 and step != end:
            spent += costs.checkpoint_s
    return spent


def test_events_count_the_multiples_after_start_and_optionally_the_end():
    assert events_in(6, 137, 100, at_end=True) == 2  # 100 and 137
    assert events_in(6, 200, 100, at_end=True) == 2  # 100 and 200 (a multiple, counted once)
    assert events_in(6, 200, 100, at_end=False) == 1  # 100; the save at 200 is the final one
    assert events_in(100, 150, 100, at_end=False) == 0
    assert events_in(5, 5, 10, at_end=True) == 0 and events_in(0, 9, 0, at_end=True) == 0


def test_the_step_count_is_the_longest_run_whose_steps_evals_and_saves_fit():
    costs = BudgetCosts(step_s=10.0, compile_s=30.0, eval_s=20.0, eval_every=100,
                        checkpoint_s=15.0, checkpoint_every=100)
    # 30 s compile + (137 - 6) x 10 s + evals at 100 and 137 + a save at 100 = 1395 s.
    assert steps_within_budget(costs, 1400.0, start=6, cap=400) == 137
    for remaining in (50.0, 333.3, 1400.0, 2345.0, 4000.0):
        total = steps_within_budget(costs, remaining, start=6, cap=400)
        assert total == 7 or _simulated_seconds(costs, 6, total) <= remaining
        assert total == 400 or _simulated_seconds(costs, 6, total + 1) > remaining


def test_the_cap_bounds_the_count_and_an_exhausted_budget_still_gives_one_step():
    costs = BudgetCosts(step_s=2.0)
    assert steps_within_budget(costs, 1e9, start=6, cap=400) == 400
    assert steps_within_budget(costs, 0.5, start=6, cap=400) == 7
    assert steps_within_budget(costs, -10.0, start=6, cap=400) == 7


class FakeClock:
    """Returns the given times in order."""

    def __init__(self, times: list[float]):
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_step_timer_takes_the_median_after_the_compiling_step():
    # start at 0; laps 40 (compile + step), then 10, 12, 9, 11, 10.
    clock = FakeClock([0.0, 40.0, 50.0, 62.0, 71.0, 82.0, 92.0])
    timer = StepTimer(clock, timed_steps=5)
    timer.start()
    done = [timer.lap() for _ in range(6)]
    assert done == [False] * 5 + [True]
    assert timer.step_s == 10.0 and timer.compile_s == 30.0


@pytest.mark.parametrize("schedule", ["wsd", "cosine", "linear"])
def test_fixing_the_length_keeps_the_rates_of_the_steps_already_taken(schedule):
    opt = OptimizerConfig(learning_rate=1e-3, schedule=schedule, warmup_steps=2,
                          min_lr_ratio=0.1)
    cap, fixed_at = 400, 6
    probe = SchedulePlan(cap, cap, "probe")
    for total in (7, 20, 137, 400):
        plan = budget_plan(opt, total, fixed_at)
        assert fixed_at <= plan.decay_start < total
        before = learning_rate_schedule(opt, probe.total_steps, probe.decay_start)
        after = learning_rate_schedule(opt, plan.total_steps, plan.decay_start)
        np.testing.assert_array_equal([float(before(i)) for i in range(fixed_at)],
                                      [float(after(i)) for i in range(fixed_at)])
        assert float(after(total)) == pytest.approx(1e-4)  # decayed at the end


def _cfg(**train) -> object:
    return run_config_from_dict({
        "model": {"architecture": {"model_type": "llama"}, "tokenizer": "tok"},
        "data": {"sources": [{"dataset": {"task": "viggo", "train_file": "x.csv"}}]},
        "optimizer": {"schedule": "wsd", "warmup_steps": 2},
        "train": {"steps": 400, **train}})


def test_a_budget_starts_on_a_probe_plan_and_steps_alone_on_the_configured_one():
    assert starting_plan(_cfg(time_budget_minutes=25), 400) == SchedulePlan(400, 400, "probe")
    assert starting_plan(_cfg(), 400) == SchedulePlan(400, 320, "steps")
    assert configured_plan(_cfg(epochs=1.0), 90).source == "epochs"
    # No room to time 5 steps after the first before the cap: the cap's plan from the start.
    assert starting_plan(_cfg(time_budget_minutes=25), 6) == SchedulePlan(6, 4, "steps")


def test_resume_keeps_the_fixed_length_and_never_reestimates(caplog):
    stored = SchedulePlan(137, 109, "budget", fixed_at=6)
    assert resumed_plan(_cfg(time_budget_minutes=25), 400, 120, stored) == stored
    # Saved while still timing: time again from the resumed step.
    assert resumed_plan(_cfg(time_budget_minutes=25), 400, 4, None).source == "probe"
    # The budget removed from the config: its own plan, with a warning.
    with caplog.at_level(logging.WARNING):
        assert resumed_plan(_cfg(), 400, 120, stored) == SchedulePlan(400, 320, "steps")
    assert "differs from this config's" in caplog.text


class _Feed:
    def __init__(self) -> None:
        self.state = {"epoch": 0, "position": 3}

    def get_state(self) -> dict:
        return dict(self.state)

    def set_state(self, state: dict) -> None:
        assert PLAN_KEY not in state
        self.state = dict(state)


def test_the_plan_rides_in_the_data_state_once_fixed():
    feed = _Feed()
    wrapped = PlannedState(feed, SchedulePlan(400, 400, "probe"))
    assert PLAN_KEY not in wrapped.get_state()  # a probe plan is not stored
    assert wrapped.unlogged_metrics() == {}
    wrapped.plan = SchedulePlan(137, 109, "budget", fixed_at=6)
    assert wrapped.unlogged_metrics() == {"schedule_total_steps": 137,
                                          "schedule_decay_start": 109}
    assert wrapped.unlogged_metrics() == {}  # logged once
    saved = wrapped.get_state()
    restored = PlannedState(_Feed(), SchedulePlan(400, 400, "probe"))
    restored.set_state(saved)
    assert restored.restored == wrapped.plan and restored.inner.state == feed.state
    restored.plan = restored.restored
    assert restored.unlogged_metrics() == {}  # the resumed run's metrics already hold it
    with pytest.raises(ValueError, match="data_state.lr_schedule is malformed"):
        restored.set_state({**saved, PLAN_KEY: {"total_steps": "many"}})


@pytest.mark.parametrize(("deadline", "warns"), [(100.0, True), (10_000.0, False)])
def test_a_budget_too_small_for_the_warmup_says_so(caplog, monkeypatch, deadline, warns):
    from train_jax.train import budget_probe

    monkeypatch.setattr(budget_probe.jax, "block_until_ready", lambda outputs: outputs)
    cfg = run_config_from_dict({
        "model": {"architecture": {"model_type": "llama"}, "tokenizer": "tok"},
        "data": {"sources": [{"dataset": {"task": "viggo", "train_file": "x.csv"}}]},
        "optimizer": {"schedule": "wsd", "warmup_steps": 20},
        "eval": {"every": 0}, "checkpoint": {"every": 1000},
        "train": {"steps": 400, "time_budget_minutes": 25, "budget_probe_steps": 2}})
    planned = PlannedState(_Feed(), SchedulePlan(400, 400, "probe"))
    # Start, three 10 s steps (the first compiles), then the time left is read once.
    probe = budget_probe.BudgetProbe(cfg, planned, FakeClock([0.0, 10.0, 20.0, 30.0, 30.0]),
                                     deadline)
    assert [probe.timed(None) for _ in range(3)] == [False, False, True]
    with caplog.at_level(logging.WARNING):
        plan, _, _ = probe.fix(3, dict, lambda values: None)
    assert (plan.total_steps <= 20) == warns
    assert ("not more than the 20 warm-up steps" in caplog.text) == warns
