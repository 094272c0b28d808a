"""Rewards of sampled completions from the task's own scorer (`Task.reward`), plus an optional
format reward (`Task.follows_format`). A scorer that raises on a completion scores it 0 and is
counted; it never stops the run (a model's output is arbitrary text; one odd string must not
cost hours of training)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from train_jax.config.loading import ConfigError

if TYPE_CHECKING:
    from eval.tasks.records import TaskExample
    from eval.tasks.task import Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardBatch:
    """Rewards of one rollout batch, one entry per completion."""

    rewards: np.ndarray  # (n,) float32: task reward + format_reward x follows the format
    format_hits: np.ndarray  # (n,) bool: the completion had the task's output shape
    errors: int  # calls of the task's reward or format check that raised (or gave NaN/inf)


def check_reward_metric(task: Task, metric: str | None) -> None:
    """Raise ConfigError unless `metric` is None or one of `task`'s metrics."""
    names = [m.name for m in task.metrics]
    if metric is not None and metric not in names:
        raise ConfigError(f"objective.grpo.reward_metric: task {task.name!r} has no metric "
                          f"{metric!r}; its metrics are {names}")


def completion_reward(task: Task, text: str, example: TaskExample,
                      metric: str | None = None) -> float:
    """The reward of one completion: the task's `reward`, or the value of its `metric`
    (0.0 when the scorer gives none, as `Task.reward` does)."""
    if metric is None:
        return float(task.reward(text, example))
    value = task.score(text, example).values.get(metric)
    return 0.0 if value is None else float(value)


def score_completions(task: Task, texts: Sequence[str], examples: Sequence[TaskExample],
                      format_reward: float = 0.0, metric: str | None = None) -> RewardBatch:
    """Score every completion `texts[i]` against `examples[i]` with `task` (by its `metric`
    when one is named)."""
    rewards = np.zeros(len(texts), np.float32)
    hits = np.zeros(len(texts), bool)
    errors = 0
    first_error: str | None = None
    for i, (text, example) in enumerate(zip(texts, examples, strict=True)):
        try:
            value = completion_reward(task, text, example, metric)
            if not math.isfinite(value):
                raise ValueError(f"reward {value} is not finite")
            rewards[i] = value
        except Exception as exc:  # noqa: BLE001 - any scorer failure scores 0, counted
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
        if format_reward:
            try:
                hits[i] = bool(task.follows_format(text))
            except Exception as exc:  # noqa: BLE001 - as above
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
    if errors:
        logger.warning("task %s: %d reward call(s) raised and scored 0 (first: %s)", task.name,
                       errors, first_error)
    return RewardBatch(rewards + np.float32(format_reward) * hits, hits, errors)
