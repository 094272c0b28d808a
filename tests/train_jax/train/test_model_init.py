"""The starting model: HF weights loaded exactly, numerics options applied to the config."""

from __future__ import annotations

import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from tests.fixtures.tiny_model import build_tiny_hf_model
from train_jax.config.run_config import MethodConfig, ModelSpec
from train_jax.train.model_init import load_initial_model


def test_hf_model_with_bf16_compute_keeps_fp32_master_weights(tmp_path):
    hf_dir = build_tiny_hf_model(tmp_path / "hf", num_hidden_layers=1)
    spec = ModelSpec(path=str(hf_dir), dtype="bfloat16", param_dtype="float32")
    initial = load_initial_model(spec, MethodConfig(), seed=0)
    assert initial.cfg.dtype == "bfloat16" and initial.cfg.param_dtype == "float32"
    assert initial.assets_dir == hf_dir
    kernel = nnx.state(initial.model, nnx.Param).to_pure_dict()["layers"][0]["mlp"]["up_proj"][
        "kernel"]
    stored = load_file(hf_dir / "model.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(kernel), stored.T)  # not rounded through bf16
