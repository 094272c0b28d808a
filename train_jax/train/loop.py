"""One training run: build everything from a `RunConfig`, resume if possible, train, save.

The run directory holds `config.yaml` (resolved), `metrics.jsonl`, `tensorboard/`,
`loss_curve.png` and `checkpoints/` (a jaxtune checkpoint directory `jaxtune export` reads).
Re-running the same command resumes from the latest committed checkpoint; SIGTERM/SIGINT
finish the current step, save, and return the signal's exit status.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import numpy as np

from train_jax.config.run_config import RunConfig
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.data_feed import BatchFeed, validation_batches
from train_jax.train.flops import peak_flops, train_flops_per_token
from train_jax.train.host_memory import RETAINING_ALLOCATORS, HeapTrimmer
from train_jax.train.metrics import PLOT_FILE, MetricsLogger, plot_loss_curve
from train_jax.train.run_control import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    RunResult,
    StopFlag,
    planned_steps,
    progress_bar,
    report_step,
    write_resolved_config,
)
from train_jax.train.run_setup import open_outputs, restore_latest, start_run
from train_jax.train.step import build_train_steps, init_state, put_batch

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "RunResult", "planned_steps", "train",
           "write_resolved_config"]


def train(cfg: RunConfig) -> RunResult:
    """Run (or resume) the training described by `cfg`."""
    if cfg.objective.name == "dpo":
        from train_jax.train.dpo.loop import train_dpo
        return train_dpo(cfg)
    if cfg.objective.name == "grpo":
        from train_jax.train.grpo.loop import train_grpo
        return train_grpo(cfg)
    run = start_run(cfg)
    initial, datasets, feed, total_steps = run.initial, run.datasets, run.feed, run.total_steps
    n_train, n_frozen, parts = run.n_train, run.n_frozen, run.parts
    length = cfg.data.max_length
    steps = build_train_steps(cfg, parts, run.mesh, run.trainable, total_steps)
    train_shape = steps.batch_shape
    state = init_state(parts, steps.tx, run.trainable, run.frozen, steps.state_shardings)
    run.trainable = run.frozen = {}  # the state holds them now

    checkpointer, metrics = open_outputs(cfg, run)
    state, start = restore_latest(checkpointer, metrics, feed, state)
    if start is not None:
        logger.info("resumed from checkpoint step %d", start)

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
    loop = _Loop(cfg, total_steps, steps, feed, checkpointer, metrics, val_sets, train_shape,
                 flops_per_token * cfg.train.batch_size * length, peak,
                 (lambda s: task_metric(parts.merge(s["trainable"], s["frozen"], train=False)))
                 if task_metric else None)
    try:
        with StopFlag() as stop:
            result = loop.run(state, stop)
    finally:
        checkpointer.close()
        metrics.close()
    if run.is_main:
        plot_loss_curve(metrics.path, run.run_dir / PLOT_FILE)
    return result


class _Loop:
    """The step loop: train, log, evaluate, checkpoint; stops on budget, steps or signal."""

    def __init__(self, cfg: RunConfig, total_steps: int, steps: Any, feed: BatchFeed,
                 checkpointer: TrainCheckpointer,
                 metrics: MetricsLogger, val_sets: list[tuple[str, dict[str, np.ndarray]]],
                 train_shape: tuple[int, int, int], flops_per_step: float, peak: float,
                 task_metric: Any = None):
        self.cfg, self.total_steps, self.steps, self.feed = cfg, total_steps, steps, feed
        self.checkpointer, self.metrics, self.val_sets = checkpointer, metrics, val_sets
        self.train_shape, self.flops_per_step, self.peak = train_shape, flops_per_step, peak
        self.shardings = steps.batch_shardings(train_shape)
        self.config_dict = cfg.to_dict()
        self.task_metric = task_metric

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
        return out

    def save(self, state: Any, values: dict[str, Any]) -> None:
        self.checkpointer.save(state, self.feed.get_state(), self.config_dict, values)

    def run(self, state: Any, stop: StopFlag) -> RunResult:
        cfg = self.cfg.train
        step = int(jax.device_get(state["step"]))
        total = self.total_steps
        budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else math.inf
        started = time.perf_counter()
        bar = progress_bar(cfg.progress and jax.process_index() == 0, step, total)
        window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
        last_saved, last_loss, last_eval = step, None, step
        heap = HeapTrimmer(cfg.host_allocator in RETAINING_ALLOCATORS)
        while step < total and stop.signum is None:
            if time.perf_counter() - started > budget_s:
                logger.info("time budget of %.1f min reached at step %d", cfg.time_budget_minutes,
                            step)
                break
            host_batch = self.feed.next()
            window_tokens += int(np.count_nonzero(host_batch["segment_ids"]))
            batch = put_batch(host_batch, self.shardings, self.train_shape)
            state, step_metrics = self.steps.train_step(state, batch)
            heap.after_step()
            step += 1
            window_steps += 1
            values: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == total or step == 1:
                host = jax.device_get(step_metrics)
                elapsed = time.perf_counter() - window_start
                last_loss = float(host["loss"])
                values = {"loss": last_loss, "lr": float(host["lr"]),
                          "grad_norm": float(host["grad_norm"]),
                          "tokens_per_s": window_tokens * jax.process_count() / elapsed,
                          "mfu": self.flops_per_step * window_steps / elapsed / self.peak,
                          "epoch": round(float(getattr(self.feed.iterator, "epoch", 0.0)), 4)}
                window_start, window_steps, window_tokens = time.perf_counter(), 0, 0
            every = self.cfg.eval.every
            if every and (step % every == 0 or step == total):
                values.update(self.evaluate(state))
                if self.task_metric is not None:
                    values.update(self.task_metric(state))
                last_eval = step
            report_step(self.metrics, bar, step, values, ("loss", "val_loss", "tokens_per_s"))
            if step % self.cfg.checkpoint.every == 0:
                self.save(state, values)
                last_saved = step
        if bar is not None:
            bar.close()
        if step != last_saved:
            final: dict[str, Any] = {}
            if stop.signum is None and self.cfg.eval.every and last_eval != step:
                final = self.evaluate(state)  # a budget stop still gets ranked and logged
                if self.task_metric is not None:
                    final.update(self.task_metric(state))
                if final:
                    self.metrics.log(step, final)
            self.save(state, final)
        self.checkpointer.wait()
        logger.info("stopped at step %d of %d", step, total)
        return RunResult(step, stop.signum, last_loss, total)

