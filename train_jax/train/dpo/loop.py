"""One DPO run: the supervised run's start, checkpoints and resume, with the preference step.

`train_dpo(cfg)` is what `jaxtune train` runs for `objective.name: dpo`. The data sources must
be preference datasets (`task: preference`); the reference model is rebuilt from the starting
weights on every (re)start, so checkpoints hold only the policy (and `jaxtune export` exports
it like any run). Each logged step writes `loss`, `reward_margin`, `accuracy`, `chosen_logp`,
`rejected_logp`, `chosen_reward`, `rejected_reward`, `grad_norm`, `lr`, `tokens_per_s` and
`epoch`; evaluation adds the same with a `val_` prefix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import RunConfig
from train_jax.train.budgeted_loop import BudgetedLoop
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed, validation_batches
from train_jax.train.dpo.plots import plot_dpo_curves
from train_jax.train.dpo.step import SUM_KEYS, DpoSteps, build_dpo_steps
from train_jax.train.metrics import PLOT_FILE, MetricsLogger, plot_loss_curve
from train_jax.train.partition import PureTree
from train_jax.train.run_control import RunResult, StopFlag
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


class DpoLoop(BudgetedLoop):
    """The DPO step loop: the preference step against the reference, its validation means."""

    bar_name = "dpo"
    bar_keys = ("loss", "reward_margin", "accuracy", "val_loss")

    def __init__(self, cfg: RunConfig, planned: PlannedState, steps: DpoSteps,
                 reference: PureTree, feed: BatchFeed, checkpointer: TrainCheckpointer,
                 metrics: MetricsLogger, val_sets: list[dict[str, np.ndarray]],
                 steps_for: Any = None, clock: Callable[[], float] = time.perf_counter):
        super().__init__(cfg, planned, steps, feed, checkpointer, metrics, steps_for=steps_for,
                         clock=clock)
        self.reference, self.val_sets = reference, val_sets
        self.shardings = steps.batch_shardings(steps.batch_shape)

    def train_once(self, state: Any, host_batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
        batch = put_batch(host_batch, self.shardings, self.steps.batch_shape)
        return self.steps.train_step(state, self.reference, batch)

    def logged_values(self, host: dict[str, Any], elapsed: float, steps: int,
                      tokens: int) -> dict[str, float]:
        values = {k: float(host[k]) for k in (*SUM_KEYS, "lr", "grad_norm")}
        values["tokens_per_s"] = tokens * jax.process_count() / elapsed
        return values

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
