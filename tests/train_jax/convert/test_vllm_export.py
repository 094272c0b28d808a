"""An exported model loads in vLLM and its greedy continuation equals the Flax model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_model import build_tiny_hf_model
from train_jax import checkpoint as ckpt
from train_jax.convert import names
from train_jax.convert.flax_model import load_flax_model, logits_fn
from train_jax.convert.hf_export import export_checkpoint
from train_jax.convert.hf_import import from_hf
from train_jax.model.generate import generate

REPO = Path(__file__).resolve().parents[3]
NEW_TOKENS = 16


def _sharpen(params: dict) -> dict:
    # transformers' std-0.02 init gives near-uniform logits whose argmax any rounding can flip;
    # larger embedding / head weights give a greedy path with clear margins.
    flat = names.flatten(params)
    for path in (("embed_tokens", "embedding"), ("lm_head", "kernel")):
        flat[path] = (flat[path] * 40).astype(flat[path].dtype)
    return names.unflatten(flat)


@pytest.mark.vllm
def test_vllm_greedy_matches_flax(tmp_path):
    src = build_tiny_hf_model(tmp_path / "src")
    cfg, params = from_hf(src)
    ckpt.write_model_checkpoint(tmp_path / "ckpt", _sharpen(params), cfg, assets_from=src)
    export_checkpoint(tmp_path / "ckpt", tmp_path / "hf")

    _, model = load_flax_model(tmp_path / "hf")
    prompts = [[1, 450, 21, 77, 1200, 9], [1, 33, 1800]]
    ours = generate(model, prompts, NEW_TOKENS)
    # The comparison is meaningful only if Flax's own choices are not near-ties.
    for prompt, cont in zip(prompts, ours, strict=True):
        logits = np.asarray(logits_fn(model)(np.asarray([prompt + cont])))[0, len(prompt) - 1: -1]
        top2 = np.sort(logits, axis=-1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-3
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(REPO)}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train_jax.convert.vllm_greedy", str(tmp_path / "hf"),
         str(NEW_TOKENS), "float32", str(tmp_path / "vllm.json")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        _, err = proc.communicate(json.dumps(prompts), timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    theirs = json.loads((tmp_path / "vllm.json").read_text())["outputs"]
    assert theirs == ours
    assert all(len(c) == NEW_TOKENS for c in ours)
