"""`Task`: the one contract every task meets (built-in or a user's own).

A task says what its examples look like (input fields, target field), how to prompt for
them in each style, how many tokens an answer may take, how to read an answer out of a
model output and how to score it. Data preparation, the training-time task metric and the
evaluation harness all go through this class, so a model is trained and evaluated on the
same prompts and judged by the same scorer.

A subclass declares only what differs: its fields, instruction, metrics and answer budget
(class attributes), `parse` and `score`, and `user_text` when the user turn is not one field.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from eval.tasks import prompting
from eval.tasks.records import DataFormatError, TaskExample, examples_from_file
from eval.tasks.scoring import ExampleScore, Metric


class Task(ABC):
    """A task: prompt rendering, answer parser and scorer, shared by training and evaluation.

    Attributes (set as class attributes by a subclass, or in its ``__init__``):

    - `name`: the registry name (``viggo``, ``sql``, ...).
    - `input_fields`: the fields of a data row the prompt is built from.
    - `target_field`: the field holding the text the model must produce.
    - `instruction`: the system turn of chat-style prompts; None means no system turn.
    - `max_new_tokens`: the answer budget at generation time.
    - `metrics`: what `score` reports, in order; the first is the primary metric unless
      `primary_metric` is overridden.
    """

    name: str
    input_fields: tuple[str, ...]
    target_field: str
    instruction: str | None
    max_new_tokens: int
    metrics: tuple[Metric, ...]

    @property
    def primary_metric(self) -> str:
        """The metric that says whether an answer is right (`correct` in reports, `reward`)."""
        return self.metrics[0].name

    # -----------------------------------------------------------------------------------------
    # Examples and prompts

    def load_examples(
        self, path: str | Path, *, skip_bad_rows: bool = False
    ) -> tuple[list[TaskExample], list[DataFormatError]]:
        """Read a CSV/JSONL file with the task's fields; returns (examples, skipped bad rows).

        Raises `DataFormatError` (naming `file:line` and the field) on the first bad row
        unless `skip_bad_rows`.
        """
        return examples_from_file(path, self.input_fields, self.target_field,
                                  skip_bad_rows=skip_bad_rows)

    def user_text(self, example: TaskExample) -> str:
        """What the user says. Default: the task's single input field.

        Tasks with several input fields must override this to say how they are combined.
        """
        if len(self.input_fields) != 1:
            raise NotImplementedError(f"task {self.name!r} has input fields {self.input_fields}; "
                                      "override user_text to say how they form the user turn")
        return example.inputs[self.input_fields[0]]

    def target(self, example: TaskExample) -> str:
        """The text the model is trained to produce for `example` (before EOS)."""
        return example.target

    def structured_prompt(self, example: TaskExample) -> str:
        """Structured-style prompt for `example`; the model continues with the target."""
        return prompting.structured_prompt(self.user_text(example))

    def chat_messages(
        self, example: TaskExample, shots: Sequence[TaskExample] = ()
    ) -> list[dict[str, str]]:
        """Chat-style messages for `example`, after optional few-shot (user, target) turns."""
        return prompting.chat_messages(self.instruction, self.user_text(example),
                                       [(self.user_text(s), self.target(s)) for s in shots])

    # -----------------------------------------------------------------------------------------
    # Answers

    @abstractmethod
    def parse(self, output: str) -> str | None:
        """The answer in a model output, in canonical text form; None when there is none."""

    @abstractmethod
    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Score a model output against `example`: one value per metric of `metrics`.

        Raises `DataFormatError` when the gold answer of `example` itself is unusable.
        """

    def reward(self, prediction: str, example: TaskExample) -> float:
        """A scalar reward for RL: the primary metric's value, 0.0 when it is not scorable.

        Not scorable (None) earns nothing rather than being skipped, so a policy cannot gain
        from outputs the scorer cannot judge. A bad gold answer still raises, as in `score`.
        A task brings its own reward by overriding this (e.g. partial credit); GRPO calls it
        once per sampled completion, and a call that raises scores 0 and is counted.
        """
        value = self.score(prediction, example).values.get(self.primary_metric)
        return 0.0 if value is None else float(value)

    def follows_format(self, prediction: str) -> bool:
        """Whether `prediction` has the task's output shape, whatever its correctness: what an
        RL format reward pays for (GRPO's `format_reward`). Default: the parser finds an answer.
        """
        return self.parse(prediction) is not None

    def output_grammar(self) -> dict[str, str] | None:
        """The shape every answer must have, for constrained decoding: the request's
        ``structured_outputs`` payload (vLLM's field), e.g. ``{"regex": "..."}`` or
        ``{"grammar": "<Lark or EBNF>"}``; None if the task has none.

        None means "decode unconstrained": a task opts in by overriding this, so no task is
        ever constrained by a grammar nobody wrote for it. Every gold target of the task's
        data must match it (a test checks the shipped data).
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
