"""`jaxtune verify` end to end on a real vLLM server: a LoRA checkpoint, its merged export and
the adapter served on the base, every pair within the float32 tolerances."""

from __future__ import annotations

import json

import pytest

from infra.cli import main
from tests.fixtures.tiny_model import build_tiny_lora_checkpoint
from tests.serve.vllm_server import TEST_ENGINE_FLAGS

# One vLLM start (two engines: the merged export, and the base carrying the adapter).
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_lora_checkpoint_verifies_through_the_server(tmp_path, capsys):
    build_tiny_lora_checkpoint(tmp_path, rank=8, alpha=16.0)
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
