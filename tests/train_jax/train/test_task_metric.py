"""The generation-based task metric scores greedy decodes with the eval harness scorers."""

from __future__ import annotations

import pytest

from tests.train_jax.train.runs import REPO, TINY_ARCH, TOKENIZER
from train_jax.config.loading import build
from train_jax.config.run_config import DataSource
from train_jax.model.config import ModelConfig
from train_jax.model.llama import init_model
from train_jax.train.task_metric import TaskMetric


@pytest.mark.slow  # ~50 s on this shared CPU (decode loop compile + transformers import)
def test_task_metric_scores_a_small_sample():
    source = build(DataSource, {"dataset": {"task": "viggo", "train_file": str(
        REPO / "data/viggo/train.csv"), "val_file": str(REPO / "data/viggo/valid.csv")}})
    metric = TaskMetric(source, TOKENIZER, samples=3, max_new_tokens=8)
    assert len(metric.prompts) == 3 and metric.prompts[0][0] == 1  # BOS, as in training rows
    values = metric(init_model(ModelConfig.from_hf_config(TINY_ARCH), 0))
    assert set(values) == {"val_exact_match", "val_function_type", "val_attribute_f1"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
