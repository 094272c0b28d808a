"""Every registered task meets the `Task` contract; the registry and the generic task behave."""

import json
from pathlib import Path

import pytest

from eval import tasks
from eval.tasks import TASK_NAMES, TaskRegistryError, get_task, register_task, task_names
from eval.tasks.prompt_completion import PromptCompletionTask
from eval.tasks.records import DataFormatError, TaskExample
from eval.tasks.scoring import ExampleScore, Metric
from eval.tasks.task import Task

DATA = Path(__file__).resolve().parents[3] / "data"
GOLD_FILES = {"viggo": "viggo/valid.csv", "sql": "sql/valid.jsonl", "gsm8k": "gsm8k/train.jsonl"}
GOLD_ROWS = 5


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    # Tasks registered by one test must not leak into the next, nor those other test files
    # registered earlier in the same process (the GRPO toy task): only the built-ins loaded.
    monkeypatch.setattr(tasks, "_registered", {name: task for name, task in
                                               tasks._registered.items()
                                               if name in tasks.TASK_NAMES})


@pytest.mark.parametrize("name", TASK_NAMES)
def test_builtin_task_meets_the_contract(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    assert task is get_task(name)  # one object per name
    tasks.check_contract(task)
    assert task.primary_metric in [m.name for m in task.metrics]
    grammar = task.output_grammar()  # a one-kind `structured_outputs` payload, or None
    assert grammar is None or (len(grammar) == 1 and set(grammar) <= {"regex", "grammar"})

    examples, skipped = task.load_examples(DATA / GOLD_FILES[name])
    assert examples and not skipped
    first = examples[0]
    prompt = task.structured_prompt(first)
    assert prompt.startswith("<START_Q>") and prompt.endswith("<START_A>")
    assert task.user_text(first) in prompt
    messages = task.chat_messages(first, examples[1:3])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant",
                                             "user"]
    assert messages[0]["content"] == task.instruction
    assert messages[-1]["content"] == task.user_text(first)

    for example in examples[:GOLD_ROWS]:
        target = task.target(example)
        scored = task.score(target, example)
        assert set(scored.values) == {m.name for m in task.metrics}
        assert scored.values[task.primary_metric] == 1.0, example.source
        assert task.parse(target) == scored.parsed
        assert task.reward(target, example) == 1.0
        assert task.reward("", example) == 0.0
        assert task.parse("") is None


def test_registered_task_is_found_and_duplicates_are_rejected():
    mine = register_task(PromptCompletionTask("mine"))
    assert get_task("mine") is mine
    assert "mine" in task_names()
    with pytest.raises(TaskRegistryError, match="'mine' is already registered"):
        register_task(PromptCompletionTask("mine"))
    with pytest.raises(TaskRegistryError, match="'viggo' is already registered"):
        register_task(PromptCompletionTask("viggo"))


def test_unknown_task_lists_the_known_ones():
    register_task(PromptCompletionTask("mine"))
    with pytest.raises(ValueError,
                       match="unknown task 'nope'; known tasks: viggo, sql, gsm8k, mine"):
        get_task("nope")


class _Broken(Task):
    name = "broken"
    input_fields = ("a", "b")
    target_field = "c"
    instruction = None
    max_new_tokens = 8
    metrics = (Metric("m", "binary", "m"),)

    @property
    def primary_metric(self) -> str:
        return "other"

    def parse(self, output: str) -> str | None:
        return output or None

    def score(self, prediction: str, example: TaskExample) -> ExampleScore:
        return ExampleScore(values={"m": None}, parsed=self.parse(prediction))


def test_contract_breaks_are_rejected_and_defaults_fail_closed():
    broken = _Broken()
    with pytest.raises(ValueError, match="primary metric 'other'"):
        register_task(broken)
    example = TaskExample(inputs={"a": "x", "b": "y"}, target="t")
    with pytest.raises(NotImplementedError, match="override user_text"):
        broken.structured_prompt(example)
    # A metric that cannot be judged earns no reward.
    assert broken.reward("t", example) == 0.0


def test_prompt_completion_task_renders_and_scores(tmp_path):
    task = PromptCompletionTask(prompt_field="in", completion_field="out",
                                system_prompt="Be brief.")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"in": "2 + 2?", "out": "4\n"}) + "\n")
    (example,), _ = task.load_examples(data)
    assert task.structured_prompt(example) == "<START_Q>2 + 2?<END_Q><START_A>"
    assert task.chat_messages(example) == [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "2 + 2?"}]
    assert PromptCompletionTask(system_prompt="").chat_messages(
        TaskExample(inputs={"prompt": "p"}, target="c")) == [{"role": "user", "content": "p"}]
    assert task.score("  4 ", example).values == {"exact_match": 1.0}
    wrong = task.score("five", example)
    assert (wrong.values, wrong.parsed) == ({"exact_match": 0.0}, "five")
    assert task.score("\n", example).errors == {"exact_match": "empty_output"}
    assert (task.reward("4", example), task.reward("", example)) == (1.0, 0.0)
    with pytest.raises(DataFormatError, match="blank completion"):
        task.score("4", TaskExample(inputs={"in": "q"}, target=" ", source="d.jsonl:2"))
