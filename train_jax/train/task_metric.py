"""The task metric during training: greedy-decode a small validation sample, score it with the
eval harness's scorers (`eval.tasks`), and report the mean of each metric as ``val_<name>``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from train_jax.config.run_config import DataSource
from train_jax.model.llama import LlamaForCausalLM

if TYPE_CHECKING:
    from eval.tasks.records import TaskExample
    from eval.tasks.task import Task

logger = logging.getLogger(__name__)


class TaskMetric:
    """Scores generations for the first `samples` validation examples of one task source."""

    def __init__(self, source: DataSource, tokenizer_dir: Path, samples: int,
                 max_new_tokens: int):
        from eval.tasks import TASK_NAMES, get_task
        from train_jax.data.tokenization import leading_special_ids, load_tokenizer

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
        prefix = leading_special_ids(self.tokenizer) if data.style == "structured" else []
        self.prompts = [prefix + self.tokenizer(self._prompt_text(ex, data.style),
                                                add_special_tokens=False)["input_ids"]
                        for ex in self.examples]
        if data.val_file is None:
            logger.warning("task metric on the first %d training rows (no data val_file)",
                           len(self.examples))

    def _prompt_text(self, example: TaskExample, style: str) -> str:
        if style == "structured":
            return self.task.structured_prompt(example)
        return self.tokenizer.apply_chat_template(self.task.chat_messages(example),
                                                  add_generation_prompt=True, tokenize=False)

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
