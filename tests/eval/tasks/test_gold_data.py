"""Every scorer gives full marks to the gold answers of the vendored task data (a sample).

Catches parsers that choke on real rows: odd MR values, SQL quoting, number formats.
"""

import random
from pathlib import Path

import pytest

from eval.tasks import get_task

DATA = Path(__file__).resolve().parents[3] / "data"


@pytest.mark.parametrize(("task", "path", "sample"), [
    ("viggo", "viggo/valid.csv", None),
    ("gsm8k", "gsm8k/train.jsonl", 500),
    ("sql", "sql/valid.jsonl", 150),
    ("sql", "sql/train.jsonl", 150),  # includes Spider joins and nested queries
])
def test_gold_answers_score_full_marks(task, path, sample):
    spec = get_task(task)
    examples, _ = spec.load_examples(DATA / path)
    if sample:
        examples = random.Random(0).sample(examples, sample)
    for example in examples:
        result = spec.score(example.target, example)
        assert all(v == 1.0 for v in result.values.values()), (example.source, result)
