"""How many steps fit a time budget, from the measured times of a run's first steps.

A run with `train.time_budget_minutes` times its first `train.budget_probe_steps` + 1 steps
(`StepTimer`; the first one includes compiling the step), one evaluation and one checkpoint
save, then asks `steps_within_budget` for the longest run whose remaining work fits the time
left: its steps at the median step time, compiling the step again for the fixed schedule, and
the evaluations and saves its cadence (`eval.every`, `checkpoint.every`) will trigger.
`BudgetProbe` is what a step loop holds while it does this. The clock is a parameter, so all
of this runs in tests on made-up times.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from train_jax.config.run_config import RunConfig
from train_jax.train.schedule_plan import PlannedState, SchedulePlan, budget_plan

logger = logging.getLogger(__name__)


def events_in(start: int, end: int, every: int, *, at_end: bool) -> int:
    """How often something that runs at the multiples of `every` runs after step `start` up
    to `end`: the multiples in (start, end), plus one at `end` itself when `at_end`."""
    if every <= 0 or end <= start:
        return 0
    return (end - 1) // every - start // every + (1 if at_end else 0)


@dataclass(frozen=True)
class BudgetCosts:
    """Measured seconds of each kind of work left in a run."""

    step_s: float  # one step: the median of the timed steps
    compile_s: float = 0.0  # compiling the step again once, for the fixed schedule
    eval_s: float = 0.0  # one evaluation (its first run: compiling included, an over-estimate)
    eval_every: int = 0  # 0: no evaluations
    checkpoint_s: float = 0.0  # one save, until committed (async saves block less)
    checkpoint_every: int = 0  # 0: no saves counted

    def seconds(self, start: int, end: int) -> float:
        """Wall time from step `start` to the end of step `end`, its last evaluation included.

        Evaluations run at the multiples of `eval_every` and at the last step. Saves at the
        multiples of `checkpoint_every` before the last step count; the final save follows the
        last step and, as always, is written after the budget's end.
        """
        return (self.compile_s + (end - start) * self.step_s
                + events_in(start, end, self.eval_every, at_end=True) * self.eval_s
                + events_in(start, end, self.checkpoint_every, at_end=False) * self.checkpoint_s)

    def describe(self, remaining_s: float) -> str:
        """The measurements behind an estimate, for the log line."""
        return (f"{self.step_s:.3g} s/step (median), {self.compile_s:.3g} s to recompile, "
                f"{self.eval_s:.3g} s per evaluation, {self.checkpoint_s:.3g} s per save, "
                f"{remaining_s / 60:.3g} min left")


def steps_within_budget(costs: BudgetCosts, remaining_s: float, start: int, cap: int) -> int:
    """The largest total step count in (start, cap] whose work after step `start` fits in
    `remaining_s`; at least `start` + 1 (the shortest run that still ends on its decay)."""
    low, high = start + 1, max(cap, start + 1)
    if costs.seconds(start, low) > remaining_s:
        return low
    while low < high:  # seconds() grows with the end step: bisect for the last one that fits
        mid = (low + high + 1) // 2
        if costs.seconds(start, mid) <= remaining_s:
            low = mid
        else:
            high = mid - 1
    return low


class StepTimer:
    """Wall time of each step from `start()` on: call `lap()` after each step has finished
    (blocked on its outputs). The first lap includes compiling the step."""

    def __init__(self, clock: Callable[[], float], timed_steps: int):
        if timed_steps < 1:
            raise ValueError(f"timed_steps must be >= 1, got {timed_steps}")
        self.clock, self.timed_steps = clock, timed_steps
        self.laps: list[float] = []
        self._last: float | None = None

    def start(self) -> None:
        self._last = self.clock()

    def lap(self) -> bool:
        """Record the step that just finished; True once the first and `timed_steps` more are."""
        if self._last is None:
            raise RuntimeError("StepTimer.lap() before start()")
        now = self.clock()
        self.laps.append(now - self._last)
        self._last = now
        return self.done

    @property
    def done(self) -> bool:
        return len(self.laps) >= self.timed_steps + 1

    @property
    def step_s(self) -> float:
        """The median of the laps after the first (compiling) one."""
        if not self.done:
            raise RuntimeError(f"{len(self.laps)} of {self.timed_steps + 1} steps timed")
        return statistics.median(self.laps[1:])

    @property
    def compile_s(self) -> float:
        """The first lap's excess over a step: what compiling the step took."""
        return max(self.laps[0] - self.step_s, 0.0)


class BudgetProbe:
    """A budgeted run's first steps, timed, then its schedule's length fixed (once).

    The loop calls `timed(outputs)` after each step and, when that returns True, `fix(...)`,
    which times one evaluation and one save, sets `planned.plan` and logs it.
    """

    def __init__(self, cfg: RunConfig, planned: PlannedState, clock: Callable[[], float],
                 deadline: float):
        self.cfg, self.planned, self.clock, self.deadline = cfg, planned, clock, deadline
        self.timer = StepTimer(clock, cfg.train.budget_probe_steps)
        self.timer.start()

    def timed(self, outputs: Any) -> bool:
        """Wait for a step's `outputs` (the step itself, not its dispatch, is timed) and record
        it; True once enough steps are timed."""
        jax.block_until_ready(outputs)
        return self.timer.lap()

    def fix(self, step: int, evaluate: Callable[[], dict[str, Any]],
            save: Callable[[dict[str, Any]], None]) -> tuple[SchedulePlan, dict[str, Any], bool]:
        """Time `evaluate()` (when evaluations are on) and `save(values)` (until committed; when
        periodic saves fall inside the run), then fix the plan for the time left. Returns the
        plan, the evaluation's values, and whether it saved."""
        every, save_every = self.cfg.eval.every, self.cfg.checkpoint.every
        cap = self.planned.plan.total_steps
        values: dict[str, Any] = {}
        eval_s = save_s = 0.0
        if every:
            begun = self.clock()
            values = evaluate()
            eval_s = self.clock() - begun
        saved = save_every < cap - 1
        if saved:  # saved before the fix: a resume from it times its steps again
            begun = self.clock()
            save(values)
            save_s = self.clock() - begun
        costs = BudgetCosts(self.timer.step_s, self.timer.compile_s, eval_s, every, save_s,
                            save_every)
        self.costs, self.cap = costs, cap  # what a later re-fit (budget_refit.py) starts from
        remaining = self.deadline - self.clock()
        total = steps_within_budget(costs, remaining, step, cap)
        if jax.process_count() > 1:  # every process must run the same steps: process 0 decides
            from jax.experimental import multihost_utils

            total = int(multihost_utils.broadcast_one_to_all(np.int32(total)))
        plan = budget_plan(self.cfg.optimizer, total, step)
        self.planned.plan = plan
        logger.info("%s; %s", plan.describe(self.cfg.optimizer), costs.describe(remaining))
        warmup = self.cfg.optimizer.warmup_steps
        if total <= warmup:
            logger.warning(
                "the time budget fits %d steps, not more than the %d warm-up steps: the run "
                "ends before reaching its peak learning rate; raise train.time_budget_minutes "
                "or lower optimizer.warmup_steps", total, warmup)
        return plan, values, saved
