"""Reading a data file into `Sample`s: the built-in tasks, prompt/completion rows, chat rows.

Built-in tasks reuse `eval.tasks` (prompt text shared with evaluation); generic data is read
with the same `file:line` error reporting (`eval.tasks.records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.tasks import get_task, prompting
from eval.tasks.records import DataFormatError, RawRow, read_rows, require_text
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
    if cfg.task in ("jsonl", "chat"):
        reader = _prompt_completion_sample if cfg.task == "jsonl" else _chat_sample
        samples: list[Sample] = []
        errors: list[DataFormatError] = []
        for item in read_rows(path):
            try:
                if isinstance(item, DataFormatError):
                    raise item
                samples.append(reader(item, cfg))
            except DataFormatError as exc:
                if not cfg.skip_bad_rows:
                    raise
                errors.append(exc)
        return samples, errors
    return _task_samples(path, cfg)


def _task_samples(path: str | Path, cfg: DataConfig) -> tuple[list[Sample], list[DataFormatError]]:
    task = get_task(cfg.task)
    examples, errors = task.load_examples(path, skip_bad_rows=cfg.skip_bad_rows)
    samples = []
    for ex in examples:
        messages = (*task.chat_messages(ex), {"role": "assistant", "content": ex.target})
        samples.append(Sample(
            source=ex.source,
            messages=tuple(messages),
            prompt=task.structured_prompt(ex),
            target=ex.target,
            input_text=task.user_text(ex),
            fields=(*((name, ex.inputs[name]) for name in task.INPUT_FIELDS),
                    (task.TARGET_FIELD, ex.target)),
        ))
    return samples, errors


def _prompt_completion_sample(row: RawRow, cfg: DataConfig) -> Sample:
    prompt_text = require_text(row, cfg.prompt_field)
    completion = require_text(row, cfg.completion_field)
    messages = [{"role": "user", "content": prompt_text},
                {"role": "assistant", "content": completion}]
    if cfg.system_prompt:
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return Sample(
        source=f"{row.path}:{row.line}",
        messages=tuple(messages),
        prompt=prompting.structured_prompt(prompt_text),
        target=completion,
        input_text=prompt_text,
        fields=((cfg.prompt_field, prompt_text), (cfg.completion_field, completion)),
    )


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
