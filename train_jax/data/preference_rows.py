"""Reading preference rows into (chosen, rejected) pairs of `Sample`s, with `file:line` errors.

Accepted JSONL rows (the prompt field is `DataConfig.prompt_field`, default ``prompt``):

- text: ``{"prompt": str, "chosen": str, "rejected": str}``. The prompt is the user turn,
  rendered like the `jsonl` task (structured marker prompt, or the chat template with the
  optional system prompt in the chat style).
- chat (style ``chat`` only): ``{"prompt": [messages], "chosen": ..., "rejected": ...}``, the
  prompt a list of ``{"role", "content"}`` messages ending with a non-assistant turn, and each
  completion either a string or a list holding one assistant message (TRL's conversational
  form, ``[{"role": "assistant", "content": ...}]``).

Rows that cannot make a pair are bad rows (a `DataFormatError` naming `file:line` and the
field; with `skip_bad_rows`, left out and counted under their reason): malformed JSON, a
missing or ill-typed field (`bad_row`), an empty completion (`empty_completion`), chosen equal
to rejected (`identical_pair`). A prompt longer than max_length (`prompt_too_long`) is found
after tokenising (`preference.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from eval.tasks.prompt_completion import PromptCompletionTask
from eval.tasks.records import DataFormatError, RawRow, TaskExample, convert_rows
from train_jax.data.config import DataConfig
from train_jax.data.sources import Sample
from train_jax.data.sources import _chat_message as chat_message  # the chat rows' own checks

CHOSEN, REJECTED = "chosen", "rejected"
# Reasons a row is bad for preference tuning (report keys beside cleaning's).
EMPTY_COMPLETION = "empty_completion"
IDENTICAL_PAIR = "identical_pair"
PROMPT_TOO_LONG = "prompt_too_long"


class PreferenceRowError(DataFormatError):
    """A well-formed row that cannot be a preference pair; `reason` is its report key."""

    def __init__(self, source: str, reason: str, message: str, field_name: str | None = None):
        path, _, line = source.rpartition(":")
        super().__init__(path, int(line) if line.isdigit() else 0, message, field_name)
        self.reason = reason


@dataclass(frozen=True)
class PreferencePair:
    """One row: the same prompt with the chosen and with the rejected completion.

    `chosen.fields` holds prompt, chosen and rejected text, so cleaning's emptiness and
    duplicate checks see the whole pair; both samples share `source` and `input_text`.
    """

    chosen: Sample
    rejected: Sample

    @property
    def source(self) -> str:
        return self.chosen.source


def load_pairs(path: str | Path, cfg: DataConfig
               ) -> tuple[list[PreferencePair], list[DataFormatError]]:
    """Read `path` into pairs; returns (pairs, skipped bad rows).

    Raises `DataFormatError` on the first bad row unless `cfg.skip_bad_rows`.
    """
    task = PromptCompletionTask(prompt_field=cfg.prompt_field, completion_field=CHOSEN,
                                system_prompt=cfg.system_prompt)
    return convert_rows(path, lambda row: _pair(row, cfg, task), skip_bad_rows=cfg.skip_bad_rows)


def _pair(row: RawRow, cfg: DataConfig, task: PromptCompletionTask) -> PreferencePair:
    source = f"{row.path}:{row.line}"
    prompt = _field(row, cfg.prompt_field)
    chosen = _completion(row, CHOSEN)
    rejected = _completion(row, REJECTED)
    for name, text in ((CHOSEN, chosen), (REJECTED, rejected)):
        if not text.strip():
            raise PreferenceRowError(source, EMPTY_COMPLETION, "empty completion", name)
    if chosen == rejected:
        raise PreferenceRowError(source, IDENTICAL_PAIR, "chosen and rejected are identical",
                                 REJECTED)
    if isinstance(prompt, str):
        example = TaskExample(inputs={cfg.prompt_field: prompt}, target=chosen, source=source)
        messages = tuple(task.chat_messages(example))
        structured, user_text = task.structured_prompt(example), prompt
    else:
        if cfg.style != "chat":
            raise DataFormatError(row.path, row.line, "a list of messages as the prompt needs "
                                  "the chat style (--style chat)", cfg.prompt_field)
        messages = tuple(chat_message(row, f"{cfg.prompt_field}[{i}]", m)
                         for i, m in enumerate(prompt))
        if not messages or messages[-1]["role"] == "assistant":
            raise DataFormatError(row.path, row.line, "the prompt must end with a user (or "
                                  "system/tool) message, before the answer", cfg.prompt_field)
        structured = ""
        user_text = "\n".join(m["content"] for m in messages)
    chosen_sample = Sample(
        source=source, messages=(*messages, {"role": "assistant", "content": chosen}),
        prompt=structured, target=chosen, input_text=user_text,
        fields=((cfg.prompt_field, user_text), (CHOSEN, chosen), (REJECTED, rejected)))
    rejected_sample = replace(chosen_sample, target=rejected,
                              messages=(*messages, {"role": "assistant", "content": rejected}))
    return PreferencePair(chosen_sample, rejected_sample)


def _field(row: RawRow, name: str) -> str | list:
    if name not in row.data:
        raise DataFormatError(row.path, row.line, "missing field", name)
    value = row.data[name]
    if not isinstance(value, (str, list)):
        raise DataFormatError(row.path, row.line, "expected a string or a list of messages, got "
                              f"{type(value).__name__}", name)
    return value


def _completion(row: RawRow, name: str) -> str:
    """A completion's text: a string, or a list holding one assistant message."""
    value = _field(row, name)
    if isinstance(value, str):
        return value
    if len(value) != 1:
        raise DataFormatError(row.path, row.line, "expected one assistant message, got "
                              f"{len(value)} messages", name)
    message = chat_message(row, f"{name}[0]", value[0])
    if message["role"] != "assistant":
        raise DataFormatError(row.path, row.line, f"expected role 'assistant', got "
                              f"{message['role']!r}", f"{name}[0].role")
    return message["content"]
