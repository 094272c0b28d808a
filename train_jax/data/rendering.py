"""Rendering a `Sample` into text pieces flagged as trained (completion) or context (masked).

Both styles end every trained assistant turn with the tokenizer's EOS token:
- ``structured``: the task's marker prompt, then target + EOS.
- ``chat``: the base model's chat template with ``add_generation_prompt=True`` up to each
  assistant turn, then that turn's content + EOS. Text the template puts after an answer
  (its end-of-turn marker, unless that is the EOS itself) stays context for the next turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train_jax.data.config import PromptStyle
from train_jax.data.sources import Sample


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template, or one that cannot be split into turns."""


@dataclass(frozen=True)
class Piece:
    """A run of text, or the EOS token when `eos` is set; `trained` marks completion tokens."""

    text: str
    trained: bool
    eos: bool = False


EOS = Piece("", trained=True, eos=True)


def render_pieces(sample: Sample, style: PromptStyle, tokenizer: Any) -> list[Piece]:
    """The pieces of `sample` in `style`; adjacent context pieces are merged."""
    if style == "structured":
        return [Piece(sample.prompt, False), Piece(sample.target, True), EOS]
    return _merge(_chat_pieces(list(sample.messages), tokenizer))


def _template(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt,
                                         tokenize=False)


def _chat_pieces(messages: list[dict[str, str]], tokenizer: Any) -> list[Piece]:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            "the tokenizer has no chat template; use the structured prompt style "
            "(--style structured) or a model with a chat template")
    assistant_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    # Only multi-turn data needs the whole rendering to check the template is prefix-stable.
    full = _template(tokenizer, messages, False) if len(assistant_turns) > 1 else None
    pieces: list[Piece] = []
    consumed = ""  # the template text already represented by pieces
    for turn in assistant_turns:
        prefix = _template(tokenizer, messages[:turn], True)
        if not prefix.startswith(consumed) or (full is not None and not full.startswith(prefix)):
            raise ChatTemplateError(
                "the chat template renders earlier turns differently once later turns are "
                "added, so assistant turns cannot be masked reliably; use single-turn data")
        pieces.append(Piece(prefix[len(consumed):], False))
        content = messages[turn]["content"]
        pieces.extend([Piece(content, True), EOS])
        if turn == assistant_turns[-1]:
            break
        with_turn = _template(tokenizer, messages[: turn + 1], False)
        if not with_turn.startswith(prefix + content):
            raise ChatTemplateError("the chat template alters assistant content; cannot mask it")
        tail = with_turn[len(prefix) + len(content):]
        eos_text = tokenizer.eos_token or ""
        if eos_text and tail.startswith(eos_text):
            tail = tail[len(eos_text):]  # already emitted as the trained EOS
        pieces.append(Piece(tail, False))
        consumed = with_turn
    return pieces


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for piece in pieces:
        if not piece.eos and not piece.text:
            continue
        last = merged[-1] if merged else None
        if last and not last.trained and not piece.trained:
            merged[-1] = Piece(last.text + piece.text, False)
        else:
            merged.append(piece)
    return merged
