"""`DataConfig`: what to prepare and how (one frozen dataclass, composed into the run config)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

TaskName = Literal["viggo", "sql", "gsm8k", "jsonl", "chat", "preference"]
PromptStyle = Literal["chat", "structured"]
LeakagePolicy = Literal["report", "drop"]

TASK_NAMES: tuple[str, ...] = get_args(TaskName)
PROMPT_STYLES: tuple[str, ...] = get_args(PromptStyle)
LEAKAGE_POLICIES: tuple[str, ...] = get_args(LeakagePolicy)


@dataclass(frozen=True)
class DataConfig:
    """Configuration of one prepared dataset.

    `task` is a built-in task (viggo, sql, gsm8k), `jsonl` (prompt/completion rows from a
    JSONL or CSV file, field names configurable) or `chat` (rows holding a `messages` list;
    only assistant turns are trained on) or `preference` (prompt/chosen/rejected rows for DPO,
    one padded (chosen, rejected) pair per row; `train_jax.data.preference`). `train_file`/`val_file` are local paths or
    ``hf://owner/name[@split]`` for a Hugging Face hub dataset (needs network).
    Without `val_file`, `val_fraction` of the cleaned training rows becomes the validation
    split (GSM8K ships no validation split). Every example's token count (prompt +
    completion + EOS) must be at most `max_length`, which is also the row length.
    """

    task: TaskName
    train_file: str
    val_file: str | None = None
    style: PromptStyle = "structured"
    max_length: int = 512
    packing: bool = True
    skip_bad_rows: bool = False
    seed: int = 0
    val_fraction: float = 0.05
    dedup: bool = True
    leakage: LeakagePolicy = "report"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASK_NAMES)
        _check_choice("style", self.style, PROMPT_STYLES)
        _check_choice("leakage", self.leakage, LEAKAGE_POLICIES)
        if not self.train_file:
            raise ValueError("data: train_file is required")
        if self.max_length < 2:
            raise ValueError(f"data: max_length must be >= 2, got {self.max_length}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data: val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.task == "chat" and self.style != "chat":
            raise ValueError("data: task 'chat' (messages lists) needs style 'chat'")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys raise naming the valid ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"data: unknown key(s) {unknown}; valid keys: {', '.join(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-serialisable)."""
        return dataclasses.asdict(self)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"data: {name} must be one of {', '.join(choices)}; got {value!r}")
