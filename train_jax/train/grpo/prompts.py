"""The prompts GRPO samples from, and the resumable order and randomness it draws them with.

Prompts are the first data source's examples (`train_file`), rendered exactly as data
preparation and the task metric render them (`task_metric.prompt_ids`). The scoring task is
`objective.grpo.task` when set (a registered name, or ``package.module:OBJECT`` naming a
user's `Task`), else the data source's own task.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from train_jax.config.loading import ConfigError
from train_jax.data.config import DataConfig

if TYPE_CHECKING:
    from eval.tasks.records import TaskExample
    from eval.tasks.task import Task

logger = logging.getLogger(__name__)


def resolve_task(name: str | None, data: DataConfig) -> Task:
    """The task that scores completions (see the module docstring)."""
    from eval.tasks import TaskRegistryError, get_task, register_task
    from eval.tasks.task import Task
    from train_jax.data.sources import task_for

    if name is None:
        if data.task == "chat":
            raise ConfigError("objective grpo needs a task with a reward: chat data has none; "
                              "set objective.grpo.task")
        return task_for(data)
    if ":" not in name:
        return get_task(name)
    module_name, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"objective.grpo.task={name!r}: cannot import it ({exc})") from None
    if not isinstance(obj, Task):
        raise ConfigError(f"objective.grpo.task={name!r} is a {type(obj).__name__}, not a Task")
    try:
        known = get_task(obj.name)
    except TaskRegistryError:  # a user's task not registered yet
        return register_task(obj)
    if known is not obj:
        raise ConfigError(f"objective.grpo.task={name!r}: another task is registered as "
                          f"{obj.name!r}")
    return known


@dataclass(frozen=True)
class PromptSet:
    """The task, its examples and their prompt token ids; `width` is the longest prompt."""

    task: Task
    examples: list[TaskExample]
    ids: list[list[int]]
    width: int


def load_prompts(task: Task, data: DataConfig, tokenizer: Any, max_new_tokens: int
                 ) -> PromptSet:
    """The data source's examples with prompts of at most `data.max_length - max_new_tokens`
    tokens (longer ones are dropped and counted), so a prompt plus its completion fits a row."""
    from train_jax.train.task_metric import prompt_ids

    examples, bad = task.load_examples(data.train_file, skip_bad_rows=data.skip_bad_rows)
    if bad:
        logger.warning("%s: skipped %d bad rows (first: %s)", data.train_file, len(bad), bad[0])
    ids = prompt_ids(task, examples, tokenizer, data.style)
    budget = data.max_length - max_new_tokens
    kept = [i for i, p in enumerate(ids) if 0 < len(p) <= budget]
    if len(kept) < len(ids):
        logger.warning("%d of %d prompts are longer than data max_length (%d) - "
                       "objective.grpo.max_new_tokens (%d) tokens: dropped", len(ids) - len(kept),
                       len(ids), data.max_length, max_new_tokens)
    if not kept:
        raise ConfigError(f"no prompt of {data.train_file} fits {budget} tokens: raise the data "
                          "source's max_length or lower objective.grpo.max_new_tokens")
    ids = [ids[i] for i in kept]
    return PromptSet(task, [examples[i] for i in kept], ids, max(len(p) for p in ids))


class RolloutState:
    """Which prompts the next step draws and the key its sampling uses: the whole state a
    resumed run needs to draw the same prompts and completions as an uninterrupted one.

    Prompts come in shuffled epochs (a permutation seeded by (seed, epoch)), `per_step` at a
    time; the sampling key is split once per step. `get_state`/`set_state` are what the
    checkpoint stores as its `data_state` (JSON).
    """

    def __init__(self, num_prompts: int, per_step: int, seed: int):
        self.num_prompts, self.per_step, self.seed = num_prompts, per_step, seed
        self.cursor = 0  # prompts drawn so far
        self.key = np.asarray(jax.random.key_data(jax.random.key(seed)))

    def next_prompts(self) -> np.ndarray:
        """Indices of the next `per_step` prompts."""
        positions = self.cursor + np.arange(self.per_step)
        self.cursor += self.per_step
        epochs, offsets = np.divmod(positions, self.num_prompts)
        return np.asarray([self._order(int(e))[o] for e, o in zip(epochs, offsets, strict=True)])

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_prompts)

    def next_key(self) -> jax.Array:
        """A fresh sampling key for this step (the state keeps the other half of the split)."""
        key, sub = jax.random.split(jax.random.wrap_key_data(self.key))
        self.key = np.asarray(jax.random.key_data(key))
        return sub

    @property
    def epoch(self) -> float:
        return self.cursor / self.num_prompts

    def get_state(self) -> dict[str, Any]:
        return {"prompt_cursor": self.cursor, "sampling_key": self.key.tolist(),
                "num_prompts": self.num_prompts}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("num_prompts") != self.num_prompts:
            raise ValueError(f"the checkpoint drew from {state.get('num_prompts')} prompts, this "
                             f"run has {self.num_prompts}: the prompt file changed")
        self.cursor = int(state["prompt_cursor"])
        self.key = np.asarray(state["sampling_key"], dtype=np.uint32)
