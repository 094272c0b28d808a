"""The task metric during training: greedy-decode a small validation sample, score it with the
eval harness's scorers (`eval.tasks`), and report the mean of each metric as ``val_<name>``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from train_jax.config.run_config import DataSource
from train_jax.model.llama import LlamaForCausalLM

if TYPE_CHECKING:
    from eval.tasks.records import TaskExample
    from eval.tasks.task import Task

logger = logging.getLogger(__name__)


def prompt_ids(task: Task, examples: Sequence[TaskExample], tokenizer: Any,
               style: str) -> list[list[int]]:
    """The token ids a model is prompted with for each example, as data preparation renders
    them: the structured prompt after the tokenizer's leading special tokens (BOS), or the
    chat template with the generation prompt. Shared by the task metric and GRPO rollouts."""
    from train_jax.data.tokenization import leading_special_ids

    if style == "structured":
        prefix = leading_special_ids(tokenizer)
        texts = [task.structured_prompt(ex) for ex in examples]
    else:
        prefix = []
        texts = [tokenizer.apply_chat_template(task.chat_messages(ex), add_generation_prompt=True,
                                               tokenize=False) for ex in examples]
    return [prefix + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


class TaskMetric:
    """Scores generations for the first `samples` validation examples of one task source."""

    def __init__(self, source: DataSource, tokenizer_dir: Path, samples: int,
                 max_new_tokens: int):
        from eval.tasks import TASK_NAMES, get_task
        from train_jax.data.tokenization import load_tokenizer

        data = source.dataset
        if data.task not in TASK_NAMES:
            raise ValueError(f"eval.task_samples needs a built-in task (one of {TASK_NAMES}); "
                             f"the first data source is {data.task!r}")
        self.task: Task = get_task(data.task)
        path = data.val_file or data.train_file  # without a val file: held-out rows unknown here
        examples, _ = self.task.load_examples(path, skip_bad_rows=True)
        self.examples = examples[:samples]
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.max_new_tokens = max_new_tokens
        self.prompts = prompt_ids(self.task, self.examples, self.tokenizer, data.style)
        if data.val_file is None:
            logger.warning("task metric on the first %d training rows (no data val_file)",
                           len(self.examples))

    def __call__(self, model: LlamaForCausalLM) -> dict[str, float]:
        from train_jax.model.generate import generate

        pad = self.tokenizer.pad_token_id
        outputs = generate(model, self.prompts, self.max_new_tokens,
                           eos_token_id=self.tokenizer.eos_token_id,
                           pad_token_id=int(pad if pad is not None else 0))
        texts = self.tokenizer.batch_decode(outputs, skip_special_tokens=True)
        totals: dict[str, list[float]] = {}
        for text, example in zip(texts, self.examples, strict=True):
            for name, value in self.task.score(text, example).values.items():
                totals.setdefault(name, []).append(0.0 if value is None else float(value))
        return {f"val_{name}": float(np.mean(values)) for name, values in totals.items()}
