"""Re-fitting a time-budgeted run's length while it trains, from the steps timed since the fix.

`BudgetProbe` fixes the length from the median of a few early steps. Later steps can be slower
than those (on a 2-core CPU a SQL run's first steps took 3.3 s at the median and the rest 4.7 s
on average: periodic host-heap trims, asynchronous saves and a busier machine are invisible to a
five-step probe), and then the budget cut the run before its decay ended. So at each evaluation
(each checkpoint when evaluations are off) while the run is still on its peak, `BudgetRefit`
measures the mean wall time per step since the fix, evaluations and saves timed apart, and asks
`steps_within_budget` again. It changes the plan only when that matters: when the current length
would overrun the budget by more than a tolerance, or when the run could be longer by more than
it. A change costs one compile of the train step, which the new length pays for.

The decay start is never moved before the current step, so the rates of the steps already taken
belong to every re-fitted plan too, and once the decay has started the length stays. A resumed
run keeps the plan its checkpoint stored and does not re-fit (its budget is a new one).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import jax
import numpy as np

from train_jax.config.run_config import RunConfig
from train_jax.train.budget_probe import BudgetCosts, BudgetProbe, steps_within_budget
from train_jax.train.schedule_plan import PlannedState, SchedulePlan, budget_plan

logger = logging.getLogger(__name__)

REFIT_TOLERANCE = 0.02  # of the planned length: smaller changes are not worth a recompile

T = TypeVar("T")


def timed_work(refit: BudgetRefit | None, kind: Literal["eval", "save"],
               work: Callable[[], T]) -> T:
    """Run `work` (an evaluation or a save); once a re-fitter exists, record its wall time so
    that it is not counted as step time."""
    if refit is None:
        return work()
    begun = refit.clock()
    result = work()
    refit.spent(kind, refit.clock() - begun)
    return result


class BudgetRefit:
    """The fixed length of a budgeted run, re-fitted at its evaluations while on the peak.

    The loop reports the seconds of each evaluation and save (`spent`) and calls `refit(step,
    state)` after the work of each step; a returned plan is the one to rebuild the step for.
    """

    def __init__(self, cfg: RunConfig, planned: PlannedState, clock: Callable[[], float],
                 deadline: float, fixed_at: int, costs: BudgetCosts, cap: int):
        self.cfg, self.planned, self.clock, self.deadline = cfg, planned, clock, deadline
        self.costs = costs  # the probe's: what a recompile costs, and the first eval and save
        self.cap = cap  # train.steps (or the epochs' steps): never longer than that
        self.since, self.since_step = clock(), fixed_at
        # The step after the fix compiles for the fixed plan: not a step's time.
        self.excluded = costs.compile_s
        self.spent_s: dict[str, list[float]] = {"eval": [], "save": []}
        self.every = cfg.eval.every or cfg.checkpoint.every

    @classmethod
    def after(cls, probe: BudgetProbe, step: int) -> BudgetRefit:
        """The re-fitter of a run whose `probe` has just fixed its length at `step`."""
        return cls(probe.cfg, probe.planned, probe.clock, probe.deadline, step, probe.costs,
                   probe.cap)

    def spent(self, kind: Literal["eval", "save"], seconds: float) -> None:
        """Record the wall time of one evaluation or one save since the fix."""
        self.spent_s[kind].append(seconds)
        self.excluded += seconds

    def measured(self, now: float, step: int) -> BudgetCosts:
        """The costs as measured since the fix: the mean step (slow steps count in full, as
        they do against the budget) and the mean evaluation and save, the probe's first ones
        until there are later ones."""
        steps = step - self.since_step
        step_s = max(now - self.since - self.excluded, 0.0) / steps
        evals, saves = self.spent_s["eval"], self.spent_s["save"]
        return dataclasses.replace(
            self.costs, step_s=step_s,
            eval_s=float(np.mean(evals)) if evals else self.costs.eval_s,
            checkpoint_s=float(np.mean(saves)) if saves else self.costs.checkpoint_s)

    def due(self, step: int) -> bool:
        """Whether `step` is a re-fit point: an evaluation (or save) step before the decay."""
        plan = self.planned.plan
        return (self.every > 0 and step % self.every == 0 and step > self.since_step
                and step < plan.decay_start and step < plan.total_steps)

    def refit(self, step: int, state: Any) -> SchedulePlan | None:
        """At a re-fit point, the plan to switch to, or None to keep the current one."""
        if not self.due(step):
            return None
        jax.block_until_ready(state)  # the steps so far have run, not just been dispatched
        now = self.clock()
        costs, remaining = self.measured(now, step), self.deadline - now
        current = self.planned.plan.total_steps
        # Keeping the plan costs no compile; switching costs one, so the new length pays it.
        fits_as_is = steps_within_budget(dataclasses.replace(costs, compile_s=0.0), remaining,
                                         step, current)
        refitted = steps_within_budget(costs, remaining, step, self.cap)
        tolerance = max(1, math.ceil(REFIT_TOLERANCE * current))
        if fits_as_is >= current:  # it fits: longer only if clearly worth the compile
            total = refitted if refitted - current > tolerance else current
        else:  # it would be cut by the budget: shorter unless the cut is within the tolerance
            total = refitted if current - fits_as_is > tolerance else current
        if jax.process_count() > 1:  # every process must run the same steps: process 0 decides
            from jax.experimental import multihost_utils

            total = int(multihost_utils.broadcast_one_to_all(np.int32(total)))
        if total == current:
            return None
        plan = budget_plan(self.cfg.optimizer, total, step)
        logger.info("re-fitted to the time budget at step %d (%d -> %d steps): %s; %s", step,
                    current, total, plan.describe(self.cfg.optimizer),
                    costs.describe(remaining))
        self.planned.plan = plan
        self.excluded += costs.compile_s  # the next step compiles for the new plan
        return plan
