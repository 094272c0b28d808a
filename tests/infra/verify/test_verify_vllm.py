"""`jaxtune verify` end to end on a real vLLM server: a LoRA checkpoint, its merged export and
the adapter served on the base, every pair within the float32 tolerances."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infra.cli import main
from tests.fixtures.tiny_model import build_tiny_hf_model
from tests.serve.vllm_server import TEST_ENGINE_FLAGS

# One vLLM start (two engines: the merged export, and the base carrying the adapter).
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_lora_checkpoint_verifies_through_the_server(tmp_path, capsys):
    from train_jax import checkpoint as ckpt
    from train_jax.convert import names
    from train_jax.convert.hf_import import from_hf
    from train_jax.model.config import LoraSpec

    src = build_tiny_hf_model(tmp_path / "src")
    lora = LoraSpec(rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
    cfg, params = from_hf(src, lora=lora)
    flat, rng = names.flatten(params), np.random.default_rng(0)
    # Imported params carry no adapters: give every target kernel a non-zero pair.
    for path in [p for p in list(flat) if p[-1] == "kernel" and p[-2] in lora.targets]:
        fan_in, fan_out = flat[path].shape
        flat[(*path[:-1], "lora_a")] = rng.standard_normal((fan_in, lora.rank)).astype(np.float32) * 0.1
        flat[(*path[:-1], "lora_b")] = rng.standard_normal((lora.rank, fan_out)).astype(np.float32) * 0.5
    ckpt.write_model_checkpoint(tmp_path / "ckpt", names.unflatten(flat), cfg, assets_from=src)
    out = tmp_path / "out"
    code = main(["verify", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out),
                 "--max-new-tokens", "12", *(f"--serve-arg={a}" for a in TEST_ENGINE_FLAGS)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = {row["name"]: row for row in json.loads((out / "verify.json").read_text())["rows"]}
    assert set(rows) == {
        "flax vs transformers", "transformers vs vllm", "transformers vs vllm b1",
        "vllm b1 vs vllm b4", "transformers vs vllm-lora", "transformers vs vllm-lora b1",
        "vllm-lora b1 vs vllm-lora b4"}
    for name in ("transformers vs vllm", "transformers vs vllm-lora"):
        assert rows[name]["count"] > 50 and 0 < rows[name]["max_dlogprob"] <= 1e-2, rows[name]
        assert rows[name]["agreement"] > 0.9
    assert (out / "work" / "lora_adapter" / "adapter_config.json").is_file()
