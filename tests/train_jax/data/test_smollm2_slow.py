"""Masking with the real SmolLM2-135M-Instruct tokenizer and chat template (slow).

Uses `$JAXTUNE_SMOLLM2_DIR` if set, else runs `jaxtune model fetch smollm2-135m-instruct`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.train_jax.data.conftest import head_of_task_file
from tests.train_jax.data.test_masking import trained_texts
from train_jax.data.config import DataConfig
from train_jax.data.prepare import prepare_dataset
from train_jax.data.sources import load_samples
from train_jax.data.tokenization import load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    if os.environ.get("JAXTUNE_SMOLLM2_DIR"):
        return Path(os.environ["JAXTUNE_SMOLLM2_DIR"])
    from infra.cli import main

    out = tmp_path_factory.mktemp("smollm2")
    if main(["model", "fetch", "smollm2-135m-instruct", "--out", str(out)]) != 0:
        pytest.skip("SmolLM2 unavailable: set JAXTUNE_SMOLLM2_DIR or make `jaxtune model "
                    "fetch smollm2-135m-instruct` work offline")
    return out


@pytest.mark.parametrize("style", ["structured", "chat"])
@pytest.mark.parametrize("task", ["viggo", "sql", "gsm8k"])
def test_smollm2_trained_tokens_decode_to_target_plus_eos(tmp_path, smollm2_dir, task, style):
    tokenizer = load_tokenizer(smollm2_dir)
    data = head_of_task_file(task, tmp_path, 100)
    cfg = DataConfig(task=task, train_file=str(data), style=style, max_length=2048,
                     val_fraction=0.0, dedup=False)
    dataset = prepare_dataset(cfg, tokenizer, tmp_path / "out", progress=False)
    samples, _ = load_samples(data, cfg)
    expected = Counter(s.target + tokenizer.eos_token for s in samples)
    assert Counter(trained_texts(dataset, "train", tokenizer)) == expected
