"""A toy verifiable task for the GRPO tests: the prompt shows a digit, the reward is 1 when the
answer's first token is that digit. With its own 17-token word-level tokenizer a random policy
earns ~1/17, so a tiny model has a reward signal from the first step.

Importable as ``tests.train_jax.train.grpo_toy:TASK`` (`objective.grpo.task`), so a `jaxtune
train` subprocess finds it; ``...:FLAKY`` is the same task whose reward raises on some answers.
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.tasks.prompting import ANSWER_START, QUESTION_END, QUESTION_START
from eval.tasks.records import TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task
from tests.train_jax.train.runs import TINY_ARCH

DIGITS = [str(d) for d in range(10)]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", QUESTION_START, QUESTION_END, ANSWER_START]
VOCAB = SPECIALS + DIGITS
ARCH = {**TINY_ARCH, "vocab_size": len(VOCAB), "max_position_embeddings": 64,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


class DigitTask(Task):
    """Reply with the digit shown."""

    input_fields = ("digit",)
    target_field = "answer"
    instruction = None
    max_new_tokens = 2
    metrics = (Metric("correct", "binary", "the first answer token is the digit shown"),)

    def __init__(self, name: str = "toy_digit", raise_on: str | None = None):
        self.name = name
        self.raise_on = raise_on

    def parse(self, output: str) -> str | None:
        words = output.split()
        return words[0] if words and words[0] in DIGITS else None

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        if self.raise_on is not None and prediction.split()[:1] == [self.raise_on]:
            raise RuntimeError(f"scorer bug on {prediction!r}")
        parsed = self.parse(prediction)
        return ExampleScore({"correct": float(parsed == example.target)}, parsed)


TASK = DigitTask()
FLAKY = DigitTask("toy_digit_flaky", raise_on="7")


def build_tokenizer(out_dir: Path) -> Path:
    """A word-level tokenizer over `VOCAB` saved as an HF folder (what load_tokenizer reads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=SPECIALS[4:])
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


def write_prompts(path: Path, repeats: int = 4) -> Path:
    """JSONL rows {"digit": d, "answer": d}, every digit `repeats` times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"digit": d, "answer": d} for _ in range(repeats) for d in DIGITS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo_config(root: Path, **sections) -> dict:
    """A tiny GRPO run config on the toy task (a dict; `sections` deep-update it)."""
    cfg = {
        "model": {"architecture": ARCH, "tokenizer": str(build_tokenizer(root / "tokenizer"))},
        "data": {"sources": [{"dataset": {"task": "jsonl", "train_file":
                                          str(write_prompts(root / "digits.jsonl")),
                                          "max_length": 16}}]},
        "objective": {"name": "grpo", "grpo": {
            "task": "tests.train_jax.train.grpo_toy:TASK", "group_size": 8,
            "prompts_per_step": 8, "max_new_tokens": 2, "temperature": 1.0,
            "clip_epsilon": 0.2, "kl_coef": 0.01}},
        "optimizer": {"learning_rate": 3e-3, "schedule": "constant", "warmup_steps": 0,
                      "clip_norm": 1.0},
        "train": {"steps": 120, "log_every": 1, "progress": False, "seed": 0},
        "eval": {"every": 0},
        "checkpoint": {"every": 10, "keep": 2, "keep_best": 0},
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(name), dict):
            merged = {**cfg[name]}
            for key, value in values.items():
                merged[key] = ({**merged[key], **value} if isinstance(value, dict)
                               and isinstance(merged.get(key), dict) else value)
            cfg[name] = merged
        else:
            cfg[name] = values
    return cfg
