"""Task registry: one module per task with prompt rendering, answer parser and scorer.

Prompt rendering here is the single source used by training data preparation and by
evaluation, so a model is evaluated on exactly the prompts it was trained on.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASK_NAMES: tuple[str, ...] = ("viggo", "sql", "gsm8k")


def get_task(name: str) -> ModuleType:
    """Return the task module for `name` (viggo, sql or gsm8k)."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"eval.tasks.{name}")
