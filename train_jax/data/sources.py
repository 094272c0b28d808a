"""Reading a data file into `Sample`s: the built-in tasks, prompt/completion rows, chat rows.

Built-in tasks and prompt/completion rows are `eval.tasks.Task`s (prompt text shared with
evaluation). Chat rows are read here: a multi-turn conversation is not a single-target task,
so it has no `Task`; it gets the same `file:line` error reporting (`eval.tasks.records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.tasks import get_task
from eval.tasks.prompt_completion import PromptCompletionTask
from eval.tasks.records import DataFormatError, RawRow, convert_rows
from eval.tasks.task import Task
from train_jax.data.config import DataConfig

CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Sample:
    """One training example, independent of prompt style.

    `messages` is the whole conversation ending with the (last) assistant turn, used by the
    chat style; `prompt` is the structured-style prompt (empty for chat data); `target` is
    the final assistant text. `input_text` is what the user supplied (used for leakage and
    duplicate checks); `fields` maps every text field to its value for the emptiness check.
    """

    source: str
    messages: tuple[dict[str, str], ...]
    prompt: str
    target: str
    input_text: str
    fields: tuple[tuple[str, str], ...]


def load_samples(path: str | Path, cfg: DataConfig) -> tuple[list[Sample], list[DataFormatError]]:
    """Read `path` as data for `cfg.task`; returns (samples, skipped bad rows).

    Raises `DataFormatError` (naming `file:line` and the field) on the first bad row unless
    `cfg.skip_bad_rows`.
    """
    if cfg.task == "chat":
        return convert_rows(path, lambda row: _chat_sample(row, cfg),
                            skip_bad_rows=cfg.skip_bad_rows)
    return _task_samples(path, task_for(cfg), cfg.skip_bad_rows)


def task_for(cfg: DataConfig) -> Task:
    """The `Task` that reads and renders `cfg`'s rows (not for chat data, which has none)."""
    if cfg.task == "chat":
        raise ValueError("chat data (messages lists) is not a single-target task")
    if cfg.task == "jsonl":
        return PromptCompletionTask(prompt_field=cfg.prompt_field,
                                    completion_field=cfg.completion_field,
                                    system_prompt=cfg.system_prompt)
    return get_task(cfg.task)


def _task_samples(path: str | Path, task: Task,
                  skip_bad_rows: bool) -> tuple[list[Sample], list[DataFormatError]]:
    examples, errors = task.load_examples(path, skip_bad_rows=skip_bad_rows)
    samples = []
    for ex in examples:
        target = task.target(ex)
        messages = (*task.chat_messages(ex), {"role": "assistant", "content": target})
        samples.append(Sample(
            source=ex.source,
            messages=tuple(messages),
            prompt=task.structured_prompt(ex),
            target=target,
            input_text=task.user_text(ex),
            fields=(*((name, ex.inputs[name]) for name in task.input_fields),
                    (task.target_field, ex.target)),
        ))
    return samples, errors


def _chat_sample(row: RawRow, cfg: DataConfig) -> Sample:
    name = cfg.messages_field
    if name not in row.data:
        raise DataFormatError(row.path, row.line, "missing field", name)
    raw = row.data[name]
    if not isinstance(raw, list):
        raise DataFormatError(row.path, row.line, f"expected a list, got {type(raw).__name__}", name)
    messages = [_chat_message(row, f"{name}[{i}]", item) for i, item in enumerate(raw)]
    last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"),
                         default=None)
    if last_assistant is None:
        raise DataFormatError(row.path, row.line, "no assistant message to train on", name)
    # Turns after the last assistant answer teach nothing: the sequence ends with its EOS.
    messages = messages[: last_assistant + 1]
    user_turns = [m["content"] for m in messages if m["role"] != "assistant"]
    return Sample(
        source=f"{row.path}:{row.line}",
        messages=tuple(messages),
        prompt="",
        target=messages[-1]["content"],
        input_text="\n".join(user_turns),
        fields=tuple((f"{name}[{i}].content", m["content"]) for i, m in enumerate(messages)),
    )


def _chat_message(row: RawRow, where: str, item: object) -> dict[str, str]:
    if not isinstance(item, dict):
        raise DataFormatError(row.path, row.line, f"expected an object, got {type(item).__name__}",
                              where)
    for key in ("role", "content"):
        if key not in item:
            raise DataFormatError(row.path, row.line, "missing field", f"{where}.{key}")
        if not isinstance(item[key], str):
            raise DataFormatError(row.path, row.line,
                                  f"expected a string, got {type(item[key]).__name__}",
                                  f"{where}.{key}")
    if item["role"] not in CHAT_ROLES:
        raise DataFormatError(row.path, row.line,
                              f"unknown role {item['role']!r}; expected one of {CHAT_ROLES}",
                              f"{where}.role")
    return {"role": item["role"], "content": item["content"]}
