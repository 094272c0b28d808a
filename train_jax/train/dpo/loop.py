"""One DPO run: the supervised run's start, checkpoints and resume, with the preference step.

`train_dpo(cfg)` is what `jaxtune train` runs for `objective.name: dpo`. The data sources must
be preference datasets (`task: preference`); the reference model is rebuilt from the starting
weights on every (re)start, so checkpoints hold only the policy (and `jaxtune export` exports
it like any run). Each logged step writes `loss`, `reward_margin`, `accuracy`, `chosen_logp`,
`rejected_logp`, `chosen_reward`, `rejected_reward`, `grad_norm`, `lr`, `tokens_per_s` and
`epoch`; evaluation adds the same with a `val_` prefix.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import RunConfig
from train_jax.train.budget_probe import BudgetProbe
from train_jax.train.budget_refit import BudgetRefit, timed_work
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed, validation_batches
from train_jax.train.dpo.plots import plot_dpo_curves
from train_jax.train.dpo.step import SUM_KEYS, DpoSteps, build_dpo_steps
from train_jax.train.host_memory import RETAINING_ALLOCATORS, HeapTrimmer
from train_jax.train.metrics import PLOT_FILE, MetricsLogger, plot_loss_curve
from train_jax.train.partition import PureTree
from train_jax.train.run_control import (
    RunResult,
    StopFlag,
    progress_bar,
    report_step,
    set_bar_total,
)
from train_jax.train.run_setup import open_outputs, restore_latest, settle_plan, start_run
from train_jax.train.schedule_plan import PlannedState, SchedulePlan, starting_plan
from train_jax.train.step import init_state, place, put_batch

logger = logging.getLogger(__name__)

DPO_PLOT_FILE = "dpo_curves.png"
VAL_KEYS: tuple[str, ...] = ("loss", "reward_margin", "accuracy", "chosen_logp", "rejected_logp")


def check_dpo_config(cfg: RunConfig) -> None:
    """Refuse settings a DPO run cannot honour, naming the key to change."""
    tasks = sorted({s.dataset.task for s in cfg.data.sources if s.dataset.task != "preference"})
    if tasks:
        raise ConfigError(f"objective.name=dpo needs preference data (data.sources.*.dataset."
                          f"task: preference), got task {', '.join(tasks)}")
    if cfg.eval.task_samples:
        raise ConfigError("eval.task_samples is not supported with objective.name=dpo; set it "
                          "to 0 (evaluate the exported model with `jaxtune eval accuracy`)")


def train_dpo(cfg: RunConfig, *, clock: Callable[[], float] = time.perf_counter) -> RunResult:
    """Run (or resume) the DPO training described by `cfg`; `clock` as in `loop.train`."""
    check_dpo_config(cfg)
    run = start_run(cfg)
    # Full and freeze: the reference is a frozen copy of the starting trainable weights (the
    # frozen ones are shared). LoRA: the base itself with the adapters off, no second copy.
    has_copy = cfg.method.name != "lora"
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), run.trainable)

    def steps_for(plan: SchedulePlan) -> DpoSteps:  # as in loop.py: compiles at the first call
        return build_dpo_steps(cfg, run.parts, run.mesh, abstract, has_copy, plan.total_steps,
                               plan.decay_start)

    planned = PlannedState(run.feed, starting_plan(cfg, run.total_steps))
    steps = steps_for(planned.plan)
    reference: PureTree = place(run.trainable, steps.reference_shardings) if has_copy else {}
    state = init_state(run.parts, steps.tx, run.trainable, run.frozen, steps.state_shardings)
    run.trainable = run.frozen = {}  # the state (and the reference) hold them now
    logger.info("dpo: %s loss, beta %g, label smoothing %g; reference: %s", cfg.objective.dpo.loss,
                cfg.objective.dpo.beta, cfg.objective.dpo.label_smoothing,
                "starting weights (frozen copy)" if has_copy else "base with LoRA adapters off")

    checkpointer, metrics = open_outputs(cfg, run)
    state, start = restore_latest(checkpointer, metrics, planned, state)
    if start is not None:
        logger.info("resumed from checkpoint step %d", start)
    if settle_plan(cfg, planned, start, run.total_steps):
        steps = steps_for(planned.plan)

    val_rows = steps.batch_shape[1] * steps.batch_shape[0] // jax.process_count()
    val_sets = [validation_batches(ds, cfg.eval.batches, val_rows) for ds in run.datasets]
    loop = DpoLoop(cfg, planned, steps, reference, run.feed, checkpointer, metrics,
                   [v for v in val_sets if v is not None], steps_for, clock)
    try:
        with StopFlag() as stop:
            result = loop.run(state, stop)
    finally:
        checkpointer.close()
        metrics.close()
    if run.is_main:
        plot_loss_curve(metrics.path, run.run_dir / PLOT_FILE)
        plot_dpo_curves(metrics.path, run.run_dir / DPO_PLOT_FILE)
    return result


class DpoLoop:
    """The step loop: train, log, evaluate, checkpoint; stops on budget, steps or signal."""

    def __init__(self, cfg: RunConfig, planned: PlannedState, steps: DpoSteps,
                 reference: PureTree, feed: BatchFeed, checkpointer: TrainCheckpointer,
                 metrics: MetricsLogger, val_sets: list[dict[str, np.ndarray]],
                 steps_for: Any = None, clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.planned, self.steps, self.reference = cfg, planned, steps, reference
        self.steps_for = steps_for  # SchedulePlan -> DpoSteps, for the budget-fixed length
        self.clock = clock
        self.feed, self.checkpointer, self.metrics, self.val_sets = (feed, checkpointer, metrics,
                                                                     val_sets)
        self.shardings = steps.batch_shardings(steps.batch_shape)
        self.config_dict = cfg.to_dict()

    def evaluate(self, state: Any) -> dict[str, float]:
        """Validation means over the pairs of every source (`val_loss`, `val_accuracy`, ...)."""
        if not self.val_sets:
            return {}
        totals = dict.fromkeys((*SUM_KEYS, "pairs"), 0.0)
        for batches in self.val_sets:
            local = batches["input_ids"].shape
            shape = (local[0], local[1] * jax.process_count(), *local[2:])
            placed = put_batch(batches, self.steps.batch_shardings(shape), shape)
            sums = jax.device_get(self.steps.eval_step(state, self.reference, placed))
            for key in totals:
                totals[key] += float(sums[key])
        pairs = max(totals["pairs"], 1.0)
        return {f"val_{k}": totals[k] / pairs for k in VAL_KEYS}

    @property
    def total_steps(self) -> int:
        return self.planned.plan.total_steps

    def save(self, state: Any, values: dict[str, Any]) -> None:
        self.checkpointer.save(state, self.planned.get_state(), self.config_dict, values)

    def save_committed(self, state: Any, values: dict[str, Any]) -> None:
        self.save(state, values)
        self.checkpointer.wait()

    def fix_schedule(self, probe: BudgetProbe, state: Any, step: int) -> tuple[dict, bool]:
        """The time budget's length fixed after the timed steps; the train step rebuilt."""
        plan, values, saved = probe.fix(step, partial(self.evaluate, state),
                                        partial(self.save_committed, state))
        self.rebuild(plan)
        return values, saved

    def rebuild(self, plan: SchedulePlan) -> None:
        """Take the train step of `plan` (the eval step, already compiled, stays)."""
        if self.steps_for is not None:
            fresh = self.steps_for(plan)
            self.steps = dataclasses.replace(self.steps, train_step=fresh.train_step, tx=fresh.tx)

    def run(self, state: Any, stop: StopFlag) -> RunResult:
        cfg = self.cfg.train
        step = int(jax.device_get(state["step"]))
        total, every = self.total_steps, self.cfg.eval.every
        budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else math.inf
        started = window_start = self.clock()
        probe = (None if self.planned.plan.is_fixed else
                 BudgetProbe(self.cfg, self.planned, self.clock, started + budget_s))
        refit: BudgetRefit | None = None  # once the probe has fixed the length
        bar = progress_bar(cfg.progress and jax.process_index() == 0, step, total, "dpo")
        window_tokens, last_saved, last_loss, last_eval = 0, step, None, step
        heap = HeapTrimmer(cfg.host_allocator in RETAINING_ALLOCATORS)
        values: dict[str, Any] = {}  # the row logged at the latest step
        while step < total and stop.signum is None:
            if self.clock() - started > budget_s:
                logger.info("time budget of %.1f min reached at step %d", cfg.time_budget_minutes,
                            step)
                break
            host_batch = self.feed.next()
            window_tokens += int(np.count_nonzero(host_batch["segment_ids"]))
            batch = put_batch(host_batch, self.shardings, self.steps.batch_shape)
            state, step_metrics = self.steps.train_step(state, self.reference, batch)
            heap.after_step()
            step += 1
            values = {}
            if probe is not None and probe.timed(step_metrics):
                values, saved = self.fix_schedule(probe, state, step)
                last_eval = step if every else last_eval
                last_saved = step if saved else last_saved
                refit, probe, total = BudgetRefit.after(probe, step), None, self.total_steps
                set_bar_total(bar, total)
            if step % cfg.log_every == 0 or step == total or step == 1:
                host = jax.device_get(step_metrics)
                elapsed = self.clock() - window_start
                values.update({k: float(host[k]) for k in (*SUM_KEYS, "lr", "grad_norm")})
                values["tokens_per_s"] = window_tokens * jax.process_count() / elapsed
                values["epoch"] = round(float(getattr(self.feed.iterator, "epoch", 0.0)), 4)
                last_loss = values["loss"]
                window_start, window_tokens = self.clock(), 0
            if every and (step % every == 0 or step == total) and last_eval != step:
                values.update(timed_work(refit, "eval", partial(self.evaluate, state)))
                last_eval = step
            if refit is not None and (plan := refit.refit(step, state)) is not None:
                self.rebuild(plan)
                total = plan.total_steps
                set_bar_total(bar, total)
            if values:  # the schedule's length, in the first row logged after it is fixed
                values.update(self.planned.unlogged_metrics())
            report_step(self.metrics, bar, step, values, ("loss", "reward_margin", "accuracy", "val_loss"))
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
        logger.info("stopped at step %d of %d", step, total)
        return RunResult(step, stop.signum, last_loss, total)
