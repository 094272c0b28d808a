"""Several merged exports served side by side (one vLLM engine each) under their own names.

Slow (two engine starts): `pytest -m slow tests/serve/test_vllm_multi_model.py`.
"""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.tiny_model import build_tiny_hf_model
from tests.serve.vllm_server import TEST_ENGINE_FLAGS, jaxtune_server

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPT = "Once upon a time"


def test_two_merged_exports_are_two_models(served_model_dir, tmp_path):
    other = build_tiny_hf_model(tmp_path / "other", seed=1)
    with jaxtune_server(served_model_dir, name="viggo-merged", log_path=tmp_path / "log",
                        extra_args=[*TEST_ENGINE_FLAGS, "--extra-model",
                                    f"sql-merged={other}"]) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        models = {m.id: m.model_extra["parent"] for m in client.models.list().data}
        assert models == {"viggo-merged": None, "sql-merged": None}
        outs = {}
        for name in models:
            out = client.completions.create(model=name, prompt=PROMPT, max_tokens=8,
                                            temperature=0, extra_body={"ignore_eos": True})
            assert out.model == name and out.usage.completion_tokens == 8
            outs[name] = out.choices[0].text
        # Different weights behind each name.
        assert outs["viggo-merged"] != outs["sql-merged"]
