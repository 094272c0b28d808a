"""`serve.vllm_params` without vLLM: what `--dtype` becomes for vLLM."""

from __future__ import annotations

import json

import pytest

from serve.vllm_params import engine_dtype


def _model_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    return tmp_path


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])  # transformers 5 / 4.x
def test_auto_keeps_a_float32_checkpoint_in_float32(tmp_path, key):
    # vLLM's own `auto` would run it in bfloat16 ("Downcasting torch.float32 to torch.bfloat16").
    assert engine_dtype(_model_dir(tmp_path, **{key: "float32"}), "auto") == "float32"


@pytest.mark.parametrize("stored", ["bfloat16", "float16", None])
def test_auto_leaves_other_checkpoints_to_vllm(tmp_path, stored):
    config = {} if stored is None else {"dtype": stored}
    assert engine_dtype(_model_dir(tmp_path, **config), "auto") == "auto"


def test_an_explicit_dtype_is_passed_as_given(tmp_path):
    model = _model_dir(tmp_path, dtype="float32")
    assert engine_dtype(model, "bfloat16") == "bfloat16"
    assert engine_dtype(tmp_path / "missing", "float16") == "float16"
    assert engine_dtype(tmp_path / "missing", "auto") == "auto"
