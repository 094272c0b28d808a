"""The fixed prompt set `jaxtune verify` scores: shipped prompts, a text/JSONL file, or a task file."""

from __future__ import annotations

import json
from pathlib import Path

from eval.tasks.prompting import structured_prompt

# Prompts in the shape the shipped tasks train on (structured style) and one plain sentence,
# so the check runs on the kind of text a tuned model is served for.
DEFAULT_PROMPTS: tuple[str, ...] = (
    "Once upon a time, a curious fox asked the old owl why the stars shine at night.",
    structured_prompt("inform(name[SpellForce 3], release_year[2017], "
                      "developer[Grimlore Games], rating[poor])"),
    structured_prompt("How many singers are older than 30? "
                      "CREATE TABLE singer (name TEXT, age INT)"),
    structured_prompt("Tom has 3 apples and buys 5 more. He gives 2 to Anna. "
                      "How many apples does Tom have now?"),
)


class PromptFileError(ValueError):
    """A prompt file that cannot be used (the message names the file and line)."""


def load_prompts(path: Path) -> list[str]:
    """Prompts from `path`: JSONL with a `prompt` field per line, or plain text, one per line."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PromptFileError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise PromptFileError(f"{path}:{number}: expected an object with a string 'prompt'")
            prompts.append(row["prompt"])
        else:
            prompts.append(line)
    if not prompts:
        raise PromptFileError(f"{path} holds no prompts")
    return prompts


def task_prompts(task_name: str, data: Path, limit: int) -> list[str]:
    """The structured-style prompts of the first `limit` examples of a task file."""
    from eval.tasks import get_task

    task = get_task(task_name)
    examples, _ = task.load_examples(data)
    if not examples:
        raise PromptFileError(f"{data} holds no {task_name} examples")
    return [task.structured_prompt(example) for example in examples[:limit]]
