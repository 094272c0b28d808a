"""Greedy generation with the Flax model equals transformers' greedy `generate`."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.tiny_model import TINYSTORIES_DIR
from train_jax.convert.flax_model import load_flax_model
from train_jax.model.generate import generate


@pytest.fixture(scope="module")
def tinystories():
    _, model = load_flax_model(TINYSTORIES_DIR, dtype="float32", param_dtype="float32")
    from transformers import AutoTokenizer

    return model, AutoTokenizer.from_pretrained(TINYSTORIES_DIR)


def _torch_greedy(prompt: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(TINYSTORIES_DIR, dtype=torch.float32).eval()
    out = ref.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_and_batches_ragged_prompts(tinystories):
    model, tok = tinystories
    long = tok("Once upon a time, there was a little dog named Max. He")["input_ids"]
    short = tok("Lily liked to")["input_ids"]
    batch = generate(model, [long, short], 16)
    assert batch[0] == _torch_greedy(long, 16)
    assert batch[1] == generate(model, [short], 16)[0]  # padding rows never leak into others
    assert len(batch[1]) == 16


def test_stops_at_eos_and_samples_with_temperature(tinystories):
    model, tok = tinystories
    prompt = tok("Once upon a time")["input_ids"]
    greedy = generate(model, [prompt], 12)[0]
    stop = greedy[3]
    stopped = generate(model, [prompt], 12, eos_token_id=stop)[0]
    assert stopped == greedy[: greedy.index(stop) + 1]
    hot = [generate(model, [prompt], 12, temperature=1.5, seed=s)[0] for s in range(3)]
    assert len({tuple(h) for h in hot}) > 1  # sampling differs across seeds
    assert generate(model, [prompt], 12, temperature=1.5, seed=1)[0] == hot[1]  # and is reproducible
    with pytest.raises(ValueError, match="non-empty prompt"):
        generate(model, [[]], 4)
    assert np.all(np.asarray(hot) < 2048)
