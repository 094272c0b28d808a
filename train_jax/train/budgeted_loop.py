"""The step loop a supervised and a DPO run share: train, log, evaluate, checkpoint; stop on the
step count, the time budget or a signal; fix the schedule's length after the timed steps
(`BudgetProbe`) and re-fit it while on the peak (`BudgetRefit`).

A run kind brings its own train step call, logged values and evaluation (`train_once`,
`logged_values`, `evaluate`); everything about when things happen lives here once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np

from train_jax.config.run_config import RunConfig
from train_jax.train.budget_probe import BudgetProbe
from train_jax.train.budget_refit import BudgetRefit, timed_work
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed
from train_jax.train.host_memory import RETAINING_ALLOCATORS, HeapTrimmer
from train_jax.train.metrics import MetricsLogger
from train_jax.train.run_control import (
    RunResult,
    StopFlag,
    TimeBudget,
    progress_bar,
    report_step,
    set_bar_total,
)
from train_jax.train.schedule_plan import PlannedState, SchedulePlan

logger = logging.getLogger(__name__)


class BudgetedLoop:
    """The loop; subclasses say how one step trains, what it logs and how to evaluate."""

    bar_name = "train"  # the progress bar's label
    bar_keys: tuple[str, ...] = ("loss",)  # logged values the bar shows

    def __init__(self, cfg: RunConfig, planned: PlannedState, steps: Any, feed: BatchFeed,
                 checkpointer: TrainCheckpointer, metrics: MetricsLogger, *,
                 steps_for: Callable[[SchedulePlan], Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.planned, self.steps, self.feed = cfg, planned, steps, feed
        self.checkpointer, self.metrics = checkpointer, metrics
        self.steps_for = steps_for  # SchedulePlan -> steps, for the budget-fitted length
        self.clock = clock
        self.config_dict = cfg.to_dict()

    # -----------------------------------------------------------------------------------------
    # What a run kind provides

    def train_once(self, state: Any, host_batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """One train step on a host batch: (new state, the step's device metrics)."""
        raise NotImplementedError

    def logged_values(self, host: dict[str, Any], elapsed: float, steps: int,
                      tokens: int) -> dict[str, float]:
        """The logged row of a step from its host metrics, over a window of `steps` steps and
        `tokens` real tokens (this process's) that took `elapsed` seconds."""
        raise NotImplementedError

    def evaluate(self, state: Any) -> dict[str, float]:
        """Validation metrics of `state` (empty when there is nothing to evaluate)."""
        raise NotImplementedError

    # -----------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.planned.plan.total_steps

    def save(self, state: Any, values: dict[str, Any]) -> None:
        self.checkpointer.save(state, self.planned.get_state(), self.config_dict, values)

    def save_committed(self, state: Any, values: dict[str, Any]) -> None:
        self.save(state, values)
        self.checkpointer.wait()

    def rebuild(self, plan: SchedulePlan) -> None:
        """Take the train step of `plan` (the eval step, already compiled, stays)."""
        if self.steps_for is not None:
            fresh = self.steps_for(plan)
            self.steps = dataclasses.replace(self.steps, train_step=fresh.train_step, tx=fresh.tx)

    def run(self, state: Any, stop: StopFlag) -> RunResult:
        """Train from `state`'s step to the end of the plan, the budget or a signal."""
        cfg, every = self.cfg.train, self.cfg.eval.every
        step = int(jax.device_get(state["step"]))
        budget = TimeBudget(cfg.time_budget_minutes, self.clock)
        probe = (None if self.planned.plan.is_fixed else
                 BudgetProbe(self.cfg, self.planned, self.clock, budget.deadline))
        refit: BudgetRefit | None = None  # once the probe has fixed the length
        bar = progress_bar(cfg.progress and jax.process_index() == 0, step, self.total_steps,
                           self.bar_name)
        window_start, window_steps, window_tokens = self.clock(), 0, 0
        last_saved, last_loss, last_eval = step, None, step
        heap = HeapTrimmer(cfg.host_allocator in RETAINING_ALLOCATORS)
        values: dict[str, Any] = {}  # the row logged at the latest step
        while step < self.total_steps and stop.signum is None:
            if budget.spent(step):
                break
            host_batch = self.feed.next()
            window_tokens += int(np.count_nonzero(host_batch["segment_ids"]))
            state, step_metrics = self.train_once(state, host_batch)
            heap.after_step()
            step += 1
            window_steps += 1
            values = {}
            if probe is not None and probe.timed(step_metrics):
                plan, values, saved = probe.fix(step, partial(self.evaluate, state),
                                                partial(self.save_committed, state))
                self.rebuild(plan)
                last_eval = step if every else last_eval
                last_saved = step if saved else last_saved
                refit, probe = BudgetRefit.after(probe, step), None
                set_bar_total(bar, plan.total_steps)
            total = self.total_steps
            if step % cfg.log_every == 0 or step == total or step == 1:
                host = jax.device_get(step_metrics)
                values.update(self.logged_values(host, self.clock() - window_start,
                                                 window_steps, window_tokens))
                values["epoch"] = round(float(getattr(self.feed.iterator, "epoch", 0.0)), 4)
                last_loss = values["loss"]
                window_start, window_steps, window_tokens = self.clock(), 0, 0
            if every and (step % every == 0 or step == total) and last_eval != step:
                values.update(timed_work(refit, "eval", partial(self.evaluate, state)))
                last_eval = step
            if refit is not None and (plan := refit.refit(step, state)) is not None:
                self.rebuild(plan)
                set_bar_total(bar, plan.total_steps)
            if values:  # the schedule's length, in the first row logged after it is fixed
                values.update(self.planned.unlogged_metrics())
            report_step(self.metrics, bar, step, values, self.bar_keys)
            if step % self.cfg.checkpoint.every == 0 and last_saved != step:
                timed_work(refit, "save", partial(self.save, state, values))
                last_saved = step
        if bar is not None:
            bar.close()
        if step != last_saved:
            # The last step's own evaluation, when it had one, ranks its checkpoint: without
            # it the final step could never be the best one.
            final: dict[str, Any] = values if last_eval == step else {}
            if stop.signum is None and every and last_eval != step:
                final = self.evaluate(state)  # a budget stop still gets ranked and logged
                if final:
                    self.metrics.log(step, final)
            self.save(state, final)
        self.checkpointer.wait()
        logger.info("stopped at step %d of %d", step, self.total_steps)
        return RunResult(step, stop.signum, last_loss, self.total_steps)
