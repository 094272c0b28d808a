"""`train_grpo(cfg)`: a GRPO run (`objective.name: grpo`), laid out like a supervised run.

Each step: draw `prompts_per_step` prompts, sample `group_size` completions of each from the
current policy (`rollout.Sampler`), score them with the task's reward (`rewards.py`)
(with dynamic sampling, further rounds until enough groups' rewards differ), normalise the
rewards within each group into advantages, compute the sampling policy's and the
reference's log-probs, and take `updates_per_rollout` optimizer steps on the clipped objective
(`step.py`). The run directory, checkpoints (`params`, `opt_state`, `run_config`, and as
`data_state` the prompt cursor and the sampling key), metrics, signals and the time budget
work as in `train_jax.train.loop`, so a resumed run draws the same prompts and completions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from train_jax import checkpoint as ckpt
from train_jax.config.loading import ConfigError
from train_jax.config.run_config import RunConfig
from train_jax.data.tokenization import load_tokenizer
from train_jax.model.generate import left_pad
from train_jax.sharding.mesh import build_mesh
from train_jax.train.checkpointing import TrainCheckpointer
from train_jax.train.grpo.objective import group_advantages
from train_jax.train.grpo.plots import REWARD_PLOT_FILE, plot_reward_curve
from train_jax.train.grpo.prompts import PromptSet, RolloutState, load_prompts, resolve_task
from train_jax.train.grpo.rewards import RewardBatch, check_reward_metric, score_completions
from train_jax.train.grpo.rollout import Sampler, update_rows
from train_jax.train.grpo.rollout_engines import RolloutFn, build_rollout_engine, engine_spec
from train_jax.train.grpo.step import GrpoSteps, build_grpo_steps
from train_jax.train.host_memory import RETAINING_ALLOCATORS, HeapTrimmer
from train_jax.train.metrics import PLOT_FILE, MetricsLogger, plot_loss_curve
from train_jax.train.model_init import load_initial_model
from train_jax.train.partition import ModelParts, merge_pure
from train_jax.train.run_control import (
    CHECKPOINT_DIR,
    RunResult,
    StopFlag,
    TimeBudget,
    progress_bar,
    report_step,
    write_resolved_config,
)
from train_jax.train.run_setup import restore_latest
from train_jax.train.step import init_state, place

logger = logging.getLogger(__name__)


def check_supported(cfg: RunConfig) -> None:
    """Raise `ConfigError` for GRPO settings this trainer cannot run."""
    grpo = cfg.objective.grpo
    if grpo.rollout != "flax" and jax.process_count() > 1:
        raise ConfigError(f"objective.grpo.rollout={grpo.rollout} runs in one process; with "
                          f"{jax.process_count()} processes use objective.grpo.rollout=flax")
    if len(cfg.data.sources) != 1:
        raise ConfigError("objective grpo draws its prompts from one data source; "
                          f"data.sources has {len(cfg.data.sources)}")
    rows = grpo.prompts_per_step * grpo.group_size
    split = cfg.train.micro_batches * jax.process_count()
    if rows % split:
        raise ConfigError(f"the rollout batch (objective.grpo.prompts_per_step x group_size = "
                          f"{rows}) must be a multiple of train.micro_batches x processes "
                          f"({split})")


def grpo_steps_total(cfg: RunConfig, num_prompts: int) -> int:
    """`train.steps`, or with `train.epochs` the steps that draw every prompt that often."""
    if cfg.train.epochs is None:
        return cfg.train.steps
    return max(1, math.ceil(cfg.train.epochs * num_prompts / cfg.objective.grpo.prompts_per_step))


def train_grpo(cfg: RunConfig) -> RunResult:
    """Run (or resume) the GRPO training described by `cfg`."""
    check_supported(cfg)
    grpo = cfg.objective.grpo
    run_dir = Path(cfg.run_dir)
    is_main = jax.process_index() == 0
    if is_main:
        write_resolved_config(cfg, run_dir)
    mesh = build_mesh(cfg.mesh)
    initial = load_initial_model(cfg.model, cfg.method, cfg.train.seed)
    parts, trainable, frozen = ModelParts.split(initial.model, cfg.method)
    del initial.model
    tokenizer = load_tokenizer(initial.assets_dir)
    data = cfg.data.sources[0].dataset
    task = resolve_task(grpo.task, data)
    check_reward_metric(task, grpo.reward_metric)
    prompts = load_prompts(task, data, tokenizer, grpo.max_new_tokens)
    rows = grpo.prompts_per_step * grpo.group_size
    micro = cfg.train.micro_batches
    shape = (micro, rows // micro, prompts.width + grpo.max_new_tokens)
    total = grpo_steps_total(cfg, len(prompts.ids))
    logger.info("grpo: task %s, %d prompts (longest %d tokens), %d x %d completions of up to %d "
                "tokens per step, %d steps", prompts.task.name, len(prompts.ids), prompts.width,
                grpo.prompts_per_step, grpo.group_size, grpo.max_new_tokens, total)

    lora_reference = cfg.method.name == "lora"
    steps = build_grpo_steps(grpo, cfg.optimizer, parts, mesh, trainable, total, shape,
                             lora_reference=lora_reference,
                             dropout=lora_reference and cfg.method.lora.dropout > 0)
    state = init_state(parts, steps.tx, trainable, frozen, steps.state_shardings)
    # The reference: the starting weights, frozen (a copy on the mesh, not the donated state).
    reference = {} if lora_reference else place(trainable, steps.reference_shardings)
    if grpo.rollout == "flax":
        sampler: Any = Sampler(parts, mesh, (steps.state_shardings["trainable"],
                                             steps.state_shardings["frozen"]),
                               rows=rows, width=prompts.width, max_new_tokens=grpo.max_new_tokens,
                               temperature=grpo.temperature, eos_token_id=tokenizer.eos_token_id)
    else:
        sampler = build_rollout_engine(grpo.rollout, engine_spec(
            grpo.rollout, initial.cfg, merge_pure(trainable, frozen), initial.assets_dir,
            run_dir / "rollout", rows=rows, width=prompts.width,
            max_new_tokens=grpo.max_new_tokens, temperature=grpo.temperature,
            eos_token_id=tokenizer.eos_token_id,
            dtype="bfloat16" if cfg.model.dtype == "bfloat16" else "float32"))
    del trainable, frozen

    ckpt_dir = run_dir / CHECKPOINT_DIR
    if is_main:
        ckpt.write_checkpoint_info(ckpt_dir, initial.cfg, source=initial.source,
                                   assets_from=initial.assets_dir)
    checkpointer = TrainCheckpointer(ckpt_dir, cfg.checkpoint)
    metrics = MetricsLogger(run_dir, enabled=is_main)
    rollout_state = RolloutState(len(prompts.ids), grpo.prompts_per_step, cfg.train.seed)
    state, start = restore_latest(checkpointer, metrics, rollout_state, state)
    if start is not None:
        logger.info("resumed from checkpoint step %d", start)
    task_metric = None
    if cfg.eval.task_samples and cfg.eval.every:
        from train_jax.train.task_metric import TaskMetric

        task_metric = TaskMetric(cfg.data.sources[0], initial.assets_dir, cfg.eval.task_samples,
                                 cfg.eval.max_new_tokens)
    pad_id = tokenizer.pad_token_id
    loop = _GrpoLoop(cfg, total, steps, sampler, prompts, tokenizer, reference, rollout_state,
                     checkpointer, metrics, int(pad_id if pad_id is not None else 0),
                     (lambda s: task_metric(parts.merge(s["trainable"], s["frozen"],
                                                        train=False))) if task_metric else None)
    try:
        with StopFlag() as stop:
            result = loop.run(state, stop)
    finally:
        checkpointer.close()
        metrics.close()
    if is_main:
        plot_loss_curve(metrics.path, run_dir / PLOT_FILE)
        plot_reward_curve(metrics.path, run_dir / REWARD_PLOT_FILE)
    return result


@dataclass
class _Rollout:
    """One step's sampled batch before the update, on the host."""

    prompt_rows: np.ndarray  # (R,) prompt index of each row
    tokens: np.ndarray  # (R, N)
    counts: np.ndarray  # (R,) completion tokens of each row (EOS included)
    rewards: RewardBatch
    advantages: np.ndarray  # (R,)
    informative: np.ndarray  # (R / group_size,) bool: the group's rewards differ
    sample_s: float = 0.0  # wall time of the sampler (scoring excluded)


def _keep_groups(rounds: list[_Rollout], wanted: int, group: int) -> _Rollout:
    """The first `wanted` groups of `rounds` whose rewards differ, then (if short) the first of
    the others, each group whole and in draw order."""
    informative = np.concatenate([r.informative for r in rounds])
    order = np.concatenate([np.flatnonzero(informative), np.flatnonzero(~informative)])
    groups = np.sort(order[:wanted])
    rows = (groups[:, None] * group + np.arange(group)).reshape(-1)

    def cat(field: str) -> np.ndarray:
        return np.concatenate([getattr(r, field) for r in rounds])[rows]

    rewards = RewardBatch(np.concatenate([r.rewards.rewards for r in rounds])[rows],
                          np.concatenate([r.rewards.format_hits for r in rounds])[rows],
                          sum(r.rewards.errors for r in rounds))
    return _Rollout(cat("prompt_rows"), cat("tokens"), cat("counts"), rewards, cat("advantages"),
                    informative[groups], sum(r.sample_s for r in rounds))


class _GrpoLoop:
    """The step loop: rollout, reward, update, log, checkpoint; stops on budget, steps, signal."""

    def __init__(self, cfg: RunConfig, total: int, steps: GrpoSteps, sampler: RolloutFn,
                 prompts: PromptSet, tokenizer: Any, reference: Any, rollout_state: RolloutState,
                 checkpointer: TrainCheckpointer, metrics: MetricsLogger, pad_id: int,
                 task_metric: Any, clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.grpo, self.total, self.steps = cfg, cfg.objective.grpo, total, steps
        self.sampler, self.prompts, self.tokenizer = sampler, prompts, tokenizer
        self.reference, self.rollout_state = reference, rollout_state
        self.checkpointer, self.metrics, self.task_metric = checkpointer, metrics, task_metric
        self.padded, self.pad = left_pad(prompts.ids, prompts.width, pad_token_id=pad_id)
        self.config_dict = cfg.to_dict()
        self.clock = clock

    def rollout(self, state: Any) -> tuple[_Rollout, dict[str, float]]:
        """Sample and score one batch; its reward statistics and timings.

        With `dynamic_sampling_rounds` > 1, groups whose completions all got the same reward
        (no advantage to learn from) are set aside and further prompts are sampled, up to that
        many rounds, until `prompts_per_step` groups differ (DAPO's dynamic sampling); a batch
        still short is filled with set-aside groups, in draw order. Reward statistics are over
        every completion sampled: the policy's own performance, not the kept batch's.
        """
        group, wanted = self.grpo.group_size, self.grpo.prompts_per_step
        started = time.perf_counter()
        rounds: list[_Rollout] = []
        sample_s = 0.0
        while True:
            rounds.append(self._sample_round(state))
            sample_s += rounds[-1].sample_s
            informative = sum(int(np.sum(r.informative)) for r in rounds)
            if informative >= wanted or len(rounds) >= self.grpo.dynamic_sampling_rounds:
                break
        batch = _keep_groups(rounds, wanted, group) if len(rounds) > 1 else rounds[0]
        every = np.concatenate([r.rewards.rewards for r in rounds])
        stats = {"reward_mean": float(every.mean()), "reward_std": float(every.std()),
                 "zero_std_groups": float(1 - np.mean(np.concatenate([r.informative
                                                                      for r in rounds]))),
                 "reward_errors": sum(r.rewards.errors for r in rounds),
                 "response_length": float(np.mean(np.concatenate([r.counts for r in rounds]))),
                 "rollout_s": sample_s,
                 "reward_s": time.perf_counter() - started - sample_s}
        if self.grpo.dynamic_sampling_rounds > 1:
            stats["rollout_rounds"] = len(rounds)
            stats["kept_zero_std_groups"] = float(1 - np.mean(batch.informative))
        if self.grpo.format_reward:
            stats["format_rate"] = float(np.mean(np.concatenate([r.rewards.format_hits
                                                                 for r in rounds])))
        return batch, stats

    def _sample_round(self, state: Any) -> _Rollout:
        """Sample `prompts_per_step` fresh prompts `group_size` times each and score them."""
        group = self.grpo.group_size
        started = time.perf_counter()
        rows = np.repeat(self.rollout_state.next_prompts(), group)  # groups are contiguous
        tokens, counts = self.sampler(state["trainable"], state["frozen"], self.padded[rows],
                                      self.pad[rows], self.rollout_state.next_key())
        sampled = time.perf_counter()
        texts = self.tokenizer.batch_decode([t[:c] for t, c in zip(tokens, counts, strict=True)],
                                            skip_special_tokens=True)
        rewards = score_completions(self.prompts.task, texts,
                                    [self.prompts.examples[i] for i in rows],
                                    self.grpo.format_reward, self.grpo.reward_metric)
        advantages = np.asarray(group_advantages(jnp.asarray(rewards.rewards), group))
        informative = np.ptp(rewards.rewards.reshape(-1, group), axis=1) > 0
        return _Rollout(rows, tokens, counts, rewards, advantages, informative,
                        sampled - started)

    def update(self, state: Any, batch: _Rollout) -> tuple[Any, Any]:
        """Log-probs of the sampled rows, then the policy update."""
        micro = self.cfg.train.micro_batches
        rows = update_rows(self.padded[batch.prompt_rows], self.pad[batch.prompt_rows],
                           batch.tokens, batch.counts, micro)
        shardings = self.steps.batch_shardings
        placed = {k: place(v, shardings[k]) for k, v in rows.items()}
        logps = self.steps.logprob_step(state, self.reference, placed)
        advantages = batch.advantages.astype(np.float32).reshape(micro, -1)
        full = {**placed, **logps, "advantages": place(advantages, shardings["advantages"])}
        return self.steps.update_step(state, full)

    def save(self, state: Any, values: dict[str, Any]) -> None:
        self.checkpointer.save(state, self.rollout_state.get_state(), self.config_dict, values)

    def run(self, state: Any, stop: StopFlag) -> RunResult:
        cfg = self.cfg.train
        step = int(jax.device_get(state["step"]))
        budget = TimeBudget(cfg.time_budget_minutes, self.clock)
        bar = progress_bar(cfg.progress and jax.process_index() == 0, step, self.total, "grpo")
        last_saved, last_loss = step, None
        heap = HeapTrimmer(cfg.host_allocator in RETAINING_ALLOCATORS)
        window: list[dict[str, float]] = []
        values: dict[str, Any] = {}  # the row logged at the latest step
        while step < self.total and stop.signum is None:
            if budget.spent(step):
                break
            batch, stats = self.rollout(state)
            update_start = time.perf_counter()
            state, step_metrics = self.update(state, batch)
            heap.after_step()
            step += 1
            window.append(stats)
            values = {}
            if step % cfg.log_every == 0 or step == self.total or step == 1:
                host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
                last_loss = host["loss"]
                values = {**host, **_window_stats(window),
                          "update_s": time.perf_counter() - update_start,
                          "epoch": round(self.rollout_state.epoch, 4)}
                window = []
            every = self.cfg.eval.every
            if self.task_metric is not None and every and (step % every == 0
                                                           or step == self.total):
                values.update(self.task_metric(state))
            report_step(self.metrics, bar, step, values, ("loss", "reward_mean", "kl"))
            if step % self.cfg.checkpoint.every == 0:
                self.save(state, values)
                last_saved = step
        if bar is not None:
            bar.close()
        if step != last_saved:  # with the last step's row: its task metric, if it had one
            self.save(state, values)
        self.checkpointer.wait()
        logger.info("stopped at step %d of %d", step, self.total)
        return RunResult(step, stop.signum, last_loss, self.total)


def _window_stats(window: list[dict[str, float]]) -> dict[str, float]:
    """Reward statistics of the steps since the last log: means, errors summed."""
    keys = window[-1].keys()
    out = {k: float(np.mean([w[k] for w in window])) for k in keys}
    out["reward_errors"] = int(sum(w["reward_errors"] for w in window))
    return out
