"""Flax vs transformers fp32 logits (max abs diff <= 1e-4) for every supported family, on the
kernel backends that run on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures.tiny_model import TINYSTORIES_DIR
from tests.train_jax.model.hf_reference import FAMILIES, build_family_model, torch_logits
from train_jax.convert.flax_model import load_flax_model, logits_fn

TOLERANCE = 1e-4


def _tokens(vocab: int, shape=(2, 24), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=shape, dtype=np.int32)


# The kernel backends whose ops run at these shapes on CPU (splash needs 128-token multiples:
# the `tpu` backend would run `reference` here; tests/train_jax/model/test_kernels.py covers it).
BACKENDS = ("reference", "xla_cpu", "gpu")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_family_matches_transformers(family, tmp_path):
    model_dir = build_family_model(family, tmp_path)
    ref = None
    for kernels in BACKENDS:
        cfg, model = load_flax_model(model_dir, kernels=kernels)
        ids = _tokens(cfg.vocab_size)
        ref = torch_logits(model_dir, ids) if ref is None else ref
        ours = np.asarray(logits_fn(model)(ids))
        assert ours.shape == ref.shape == (2, 24, cfg.vocab_size)
        assert ref.std() > 0.5, "reference logits too small for the tolerance to mean anything"
        diff = float(np.abs(ours - ref).max())
        assert diff <= TOLERANCE, f"{family} on {kernels}: max abs logit diff {diff:.2e}"


def test_family_features_are_exercised(tmp_path):
    # Guards the parametrisation above: each named feature really is in the configs.
    from tests.train_jax.model.hf_reference import BASE
    from train_jax.model.config import ModelConfig

    cfgs = {n: ModelConfig.from_hf_config({**BASE, **spec}) for n, spec in FAMILIES.items()}
    assert cfgs["qwen2_bias"].attention_bias
    assert cfgs["llama3_rope_scaling"].rope_scaling_dict["rope_type"] == "llama3"
    assert cfgs["smollm2_like"].tie_word_embeddings and not cfgs["llama2"].tie_word_embeddings
    assert cfgs["gqa_head_dim_32"].head_dim * 4 != 64
    assert cfgs["gqa_head_dim_32"].num_key_value_heads < cfgs["gqa_head_dim_32"].num_attention_heads
    assert cfgs["mistral"].model_type == "mistral"


def test_pretrained_tinystories_matches_transformers():
    _, model = load_flax_model(TINYSTORIES_DIR, dtype="float32", param_dtype="float32")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINYSTORIES_DIR)
    ids = np.asarray([tok("Once upon a time, there was a little girl named Lily. She")["input_ids"]])
    ours = np.asarray(logits_fn(model)(ids))
    ref = torch_logits(TINYSTORIES_DIR, ids)
    diff = float(np.abs(ours - ref).max())
    assert diff <= TOLERANCE, f"tinystories: max abs logit diff {diff:.2e}"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
