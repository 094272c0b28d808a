"""A user's own task: rows of prompt/completion text (JSONL or CSV), scored by exact match."""

from __future__ import annotations

from eval.tasks.records import DataFormatError, TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task


def normalise_whitespace(text: str) -> str:
    """`text` with runs of whitespace collapsed to one space and no leading/trailing space."""
    return " ".join(text.split())


class PromptCompletionTask(Task):
    """Rows with a prompt field (the user turn) and a completion field (the target).

    `system_prompt` is the system turn of chat-style prompts (none when None or empty). The
    answer is the whole output; it is right when it equals the completion once whitespace is
    normalised, so formatting noise (a trailing newline, double spaces) does not count.
    """

    def __init__(self, name: str = "jsonl", *, prompt_field: str = "prompt",
                 completion_field: str = "completion", system_prompt: str | None = None,
                 max_new_tokens: int = 256):
        if not name:
            raise ValueError("a task needs a non-empty name")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.name = name
        self.input_fields = (prompt_field,)
        self.target_field = completion_field
        # An empty system prompt means none, as `--system-prompt ""` on the command line.
        self.instruction = system_prompt or None
        self.max_new_tokens = max_new_tokens
        self.metrics = (Metric("exact_match", "binary",
                               "output equal to the completion after whitespace normalisation"),)

    def parse(self, output: str) -> str | None:
        """The whole output, whitespace-normalised; None when it is blank."""
        return normalise_whitespace(output) or None

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        """Exact match of the normalised output and completion; a blank completion raises."""
        gold = self.parse(example.target)
        if gold is None:
            raise DataFormatError(example.source or "<example>", 0, "blank completion",
                                  self.target_field)
        parsed = self.parse(prediction)
        if parsed is None:
            return ExampleScore(values={"exact_match": 0.0}, parsed=None,
                                errors={"exact_match": "empty_output"})
        return ExampleScore(values={"exact_match": float(parsed == gold)}, parsed=parsed)
