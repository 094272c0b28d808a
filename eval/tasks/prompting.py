"""Prompt rendering shared by every task, in the two styles jaxtune supports.

- ``chat``: the base model's chat template with a task instruction as the system turn
  (for instruction-tuned bases and for prompting untuned baselines, optionally few-shot).
- ``structured``: a compact format with explicit markers and no prose instruction; the
  study behind jaxtune found such markers train better than instructions. The
  completion (target + EOS) follows the prompt directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.tasks.records import TaskExample

QUESTION_START = "<START_Q>"
QUESTION_END = "<END_Q>"
ANSWER_START = "<START_A>"


def structured_prompt(user_text: str) -> str:
    """The structured-style prompt; the model continues with the answer."""
    return f"{QUESTION_START}{user_text}{QUESTION_END}{ANSWER_START}"


def chat_messages(
    instruction: str | None,
    user_text: str,
    shots: Sequence[tuple[str, str]] = (),
) -> list[dict[str, str]]:
    """Chat-style messages: system instruction, optional (user, assistant) shots, the query.

    No system turn when `instruction` is None (e.g. a user's task without a system prompt).
    """
    messages: list[dict[str, str]] = []
    if instruction is not None:
        messages.append({"role": "system", "content": instruction})
    for shot_user, shot_answer in shots:
        messages.append({"role": "user", "content": shot_user})
        messages.append({"role": "assistant", "content": shot_answer})
    messages.append({"role": "user", "content": user_text})
    return messages


def pick_shots(pool: Sequence[TaskExample], k: int) -> list[TaskExample]:
    """The first `k` examples of `pool`: deterministic, so baselines are reproducible."""
    if k < 0:
        raise ValueError(f"number of shots must be >= 0, got {k}")
    if k > len(pool):
        raise ValueError(f"asked for {k} shots but the shot pool has only {len(pool)} examples")
    return list(pool[:k])
