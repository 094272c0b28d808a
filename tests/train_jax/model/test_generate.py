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


def test_lora_model_decodes_like_its_merged_export_with_dropout_off():
    from train_jax.convert import names
    from train_jax.convert.flax_model import model_from_params
    from train_jax.convert.hf_export import merge_lora
    from train_jax.convert.hf_import import from_hf
    from train_jax.model.config import LoraSpec

    lora = LoraSpec(rank=4, alpha=8.0, dropout=0.5, targets=("q_proj", "v_proj", "down_proj"))
    cfg, params = from_hf(TINYSTORIES_DIR, weight_dtype="float32", lora=lora)
    rng = np.random.default_rng(0)
    flat = names.flatten(params)
    for path in list(flat):
        if path[-1] == "kernel" and path[-2] in lora.targets:
            fan_in, fan_out = flat[path].shape
            flat[(*path[:-1], "lora_a")] = (0.3 * rng.standard_normal((fan_in, 4))).astype(np.float32)
            flat[(*path[:-1], "lora_b")] = (0.3 * rng.standard_normal((4, fan_out))).astype(np.float32)
    with_lora = names.unflatten(flat)
    adapted = model_from_params(cfg, with_lora)
    merged = model_from_params(cfg.replace(lora=None), merge_lora(with_lora, lora))
    base = model_from_params(cfg.replace(lora=None), params)
    prompt = [[1, 64, 349, 1148, 16, 352, 392]]
    out = generate(adapted, prompt, 12)
    assert out == generate(merged, prompt, 12)  # adapters used, dropout (p=0.5) off
    assert out != generate(base, prompt, 12)  # and they change the model
