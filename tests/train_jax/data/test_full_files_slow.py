"""The masking property on every row of the full vendored task files (slow)."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.train_jax.data.conftest import TASK_FILES
from tests.train_jax.data.test_masking import trained_texts
from train_jax.data.config import DataConfig
from train_jax.data.prepare import prepare_dataset
from train_jax.data.sources import load_samples

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("style", ["structured", "chat"])
@pytest.mark.parametrize("task", ["viggo", "sql", "gsm8k"])
def test_every_kept_example_trains_on_exactly_its_target(tmp_path, bytelevel_tokenizer, task,
                                                        style):
    cfg = DataConfig(task=task, train_file=str(TASK_FILES[task]), style=style, max_length=4096,
                     val_fraction=0.05)
    dataset = prepare_dataset(cfg, bytelevel_tokenizer, tmp_path / "out", progress=False)
    samples, _ = load_samples(TASK_FILES[task], cfg)
    allowed = Counter(s.target + bytelevel_tokenizer.eos_token for s in samples)
    for split in dataset.splits:
        texts = Counter(trained_texts(dataset, split, bytelevel_tokenizer))
        assert texts.total() == dataset.meta["splits"][split]["examples"] > 0
        assert not texts - allowed  # each trained segment is exactly one row's target + EOS
