"""Task registry: name -> `Task` object (prompt rendering, answer parser and scorer).

Prompt rendering here is the single source used by training data preparation and by
evaluation, so a model is evaluated on exactly the prompts it was trained on.

The built-in tasks (`TASK_NAMES`) are imported on first use, so importing a helper such as
`eval.tasks.records` does not pull in every scorer's dependencies (sqlglot for SQL).
A user's task is added with `register_task`.
"""

from __future__ import annotations

import importlib

from eval.tasks.task import Task

# Built-in task name -> module holding its `TASK` object.
_BUILTIN_MODULES: dict[str, str] = {
    "viggo": "eval.tasks.viggo",
    "sql": "eval.tasks.sql",
    "gsm8k": "eval.tasks.gsm8k",
}
TASK_NAMES: tuple[str, ...] = tuple(_BUILTIN_MODULES)

_registered: dict[str, Task] = {}


class TaskRegistryError(ValueError):
    """A task name is unknown or already taken; the message lists the known names."""


def task_names() -> tuple[str, ...]:
    """Every task `get_task` knows: the built-ins, then registered tasks in order."""
    return TASK_NAMES + tuple(name for name in _registered if name not in _BUILTIN_MODULES)


def get_task(name: str) -> Task:
    """Return the task called `name`; raises `TaskRegistryError` listing the known names."""
    if name in _registered:
        return _registered[name]
    if name not in _BUILTIN_MODULES:
        raise TaskRegistryError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
    task = importlib.import_module(_BUILTIN_MODULES[name]).TASK
    _registered[name] = task
    return task


def register_task(task: Task) -> Task:
    """Make `task` available to `get_task` under `task.name`; returns it.

    Raises `TaskRegistryError` when the name is taken (built-in or registered before), and
    `ValueError` when the task breaks the contract (its primary metric is not one of its
    metrics, or it has no input fields).
    """
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task, got {type(task).__name__}")
    if task.name in _BUILTIN_MODULES or task.name in _registered:
        raise TaskRegistryError(f"a task named {task.name!r} is already registered; "
                                f"pick another name (taken: {', '.join(task_names())})")
    check_contract(task)
    _registered[task.name] = task
    return task


def check_contract(task: Task) -> None:
    """Raise `ValueError` naming what `task` declares wrongly (fields, metrics, budget)."""
    if not task.input_fields:
        raise ValueError(f"task {task.name!r} declares no input fields")
    if not task.metrics:
        raise ValueError(f"task {task.name!r} declares no metrics")
    if task.target_field in task.input_fields:
        raise ValueError(f"task {task.name!r}: target field {task.target_field!r} is also an "
                         "input field")
    names = [metric.name for metric in task.metrics]
    if task.primary_metric not in names:
        raise ValueError(f"task {task.name!r}: primary metric {task.primary_metric!r} is not "
                         f"one of its metrics {names}")
    if task.max_new_tokens < 1:
        raise ValueError(f"task {task.name!r}: max_new_tokens must be >= 1, "
                         f"got {task.max_new_tokens}")
