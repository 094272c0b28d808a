"""One training run: build everything from a `RunConfig`, resume if possible, train, save.

The run directory holds `config.yaml` (resolved), `metrics.jsonl`, `tensorboard/`,
`loss_curve.png` and `checkpoints/` (a jaxtune checkpoint directory `jaxtune export` reads).
Re-running the same command resumes from the latest committed checkpoint; SIGTERM/SIGINT
finish the current step, save, and return the signal's exit status. With a time budget the
learning-rate schedule's length is fixed after timing the first steps (`schedule_plan.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from train_jax.config.run_config import RunConfig
from train_jax.train.budgeted_loop import BudgetedLoop
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed, validation_batches
from train_jax.train.flops import peak_flops, train_flops_per_token
from train_jax.train.metrics import PLOT_FILE, MetricsLogger, plot_loss_curve
from train_jax.train.run_control import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RunResult,
    StopFlag,
    planned_steps,
    write_resolved_config,
)
from train_jax.train.run_setup import open_outputs, restore_latest, settle_plan, start_run
from train_jax.train.schedule_plan import PlannedState, SchedulePlan, starting_plan
from train_jax.train.step import StepFunctions, build_train_steps, init_state, put_batch

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "RunResult", "planned_steps", "train",
           "write_resolved_config"]


def train(cfg: RunConfig, *, clock: Callable[[], float] = time.perf_counter) -> RunResult:
    """Run (or resume) the training described by `cfg`. `clock` (seconds) times the steps
    and the time budget of a supervised or DPO run; tests pass a fake one."""
    if cfg.objective.name == "dpo":
        from train_jax.train.dpo.loop import train_dpo
        return train_dpo(cfg, clock=clock)
    if cfg.objective.name == "grpo":
        from train_jax.train.grpo.loop import train_grpo
        return train_grpo(cfg)
    run = start_run(cfg)
    initial, datasets, feed = run.initial, run.datasets, run.feed
    n_train, n_frozen, parts = run.n_train, run.n_frozen, run.parts
    length = cfg.data.max_length
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), run.trainable)

    def steps_for(plan: SchedulePlan) -> StepFunctions:
        # Building is cheap: jit compiles at the first call, so a rebuild before any step
        # costs nothing and one after the timed steps costs one compile (counted in the budget).
        return build_train_steps(cfg, parts, run.mesh, abstract, plan.total_steps,
                                 plan.decay_start)

    plan = starting_plan(cfg, run.total_steps)
    steps = steps_for(plan)
    train_shape = steps.batch_shape
    state = init_state(parts, steps.tx, run.trainable, run.frozen, steps.state_shardings)
    run.trainable = run.frozen = {}  # the state holds them now

    checkpointer, metrics = open_outputs(cfg, run)
    planned = PlannedState(feed, plan)
    state, start = restore_latest(checkpointer, metrics, planned, state)
    if start is not None:
        logger.info("resumed from checkpoint step %d", start)
    if settle_plan(cfg, planned, start, run.total_steps):
        steps = steps_for(planned.plan)

    val_rows = train_shape[1] // jax.process_count()
    val_sets = [(src.dataset.task, validation_batches(ds, cfg.eval.batches, val_rows))
                for src, ds in zip(cfg.data.sources, datasets, strict=True)]
    val_sets = [(name, b) for name, b in val_sets if b is not None]
    fraction = n_train / max(n_train + n_frozen, 1)
    flops_per_token = train_flops_per_token(initial.cfg, length, fraction)
    peak = peak_flops(cfg.model.dtype, cfg.train.peak_tflops_per_device)
    task_metric = None
    if cfg.eval.task_samples:
        from train_jax.train.task_metric import TaskMetric

        task_metric = TaskMetric(cfg.data.sources[0], initial.assets_dir, cfg.eval.task_samples,
                                 cfg.eval.max_new_tokens)
    loop = _Loop(cfg, planned, steps, feed, checkpointer, metrics, val_sets, train_shape,
                 flops_per_token * cfg.train.batch_size * length, peak,
                 (lambda s: task_metric(parts.merge(s["trainable"], s["frozen"], train=False)))
                 if task_metric else None, clock=clock, steps_for=steps_for)
    try:
        with StopFlag() as stop:
            result = loop.run(state, stop)
    finally:
        checkpointer.close()
        metrics.close()
    if run.is_main:
        plot_loss_curve(metrics.path, run.run_dir / PLOT_FILE)
    return result


class _Loop(BudgetedLoop):
    """The supervised step loop: next-token loss, MFU, validation loss (per source of a
    mixture) and the task metric."""

    bar_keys = ("loss", "val_loss", "tokens_per_s")

    def __init__(self, cfg: RunConfig, planned: PlannedState, steps: StepFunctions,
                 feed: BatchFeed, checkpointer: TrainCheckpointer,
                 metrics: MetricsLogger, val_sets: list[tuple[str, dict[str, np.ndarray]]],
                 train_shape: tuple[int, int, int], flops_per_step: float, peak: float,
                 task_metric: Any = None, *, clock: Callable[[], float] = time.perf_counter,
                 steps_for: Callable[[SchedulePlan], StepFunctions] | None = None):
        super().__init__(cfg, planned, steps, feed, checkpointer, metrics, steps_for=steps_for,
                         clock=clock)
        self.val_sets, self.task_metric = val_sets, task_metric
        self.train_shape, self.flops_per_step, self.peak = train_shape, flops_per_step, peak
        self.shardings = steps.batch_shardings(train_shape)

    def train_once(self, state: Any, host_batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
        return self.steps.train_step(state, put_batch(host_batch, self.shardings,
                                                      self.train_shape))

    def logged_values(self, host: dict[str, Any], elapsed: float, steps: int,
                      tokens: int) -> dict[str, float]:
        return {"loss": float(host["loss"]), "lr": float(host["lr"]),
                "grad_norm": float(host["grad_norm"]),
                "tokens_per_s": tokens * jax.process_count() / elapsed,
                "mfu": self.flops_per_step * steps / elapsed / self.peak}

    def evaluate(self, state: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, batches in self.val_sets:
            shape = (batches["input_ids"].shape[0], self.train_shape[1], self.train_shape[2])
            placed = put_batch(batches, self.steps.batch_shardings(shape), shape)
            result = jax.device_get(self.steps.eval_step(state, placed))
            out[f"val_loss/{name}"] = float(result["loss_sum"]) / max(float(result["tokens"]), 1)
        if out:
            out["val_loss"] = float(np.mean(list(out.values())))
            if len(self.val_sets) == 1:
                out.pop(f"val_loss/{self.val_sets[0][0]}")
        if self.task_metric is not None:
            out.update(self.task_metric(state))
        return out
