"""Run in its own process (the engine is in-process vLLM): start the vLLM rollout engine from a
tiny model, reload it with perturbed weights, and print as JSON how far vLLM's prompt
log-probs are from transformers' on an export of those weights, before and after the reload.

    python -m tests.infra.rollout.weight_push WORK_DIR tied|untied
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

PROMPT = [5, 17, 99, 3, 250, 41, 7, 8, 1200, 64]


def _transformers_logprobs(folder: Path) -> list[float]:
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0].log_softmax(-1)
    return [logits[i, PROMPT[i + 1]].item() for i in range(len(PROMPT) - 1)]


def main(work: Path, tied: bool) -> dict:
    from infra.rollout.vllm_rollout import VllmRollout
    from tests.fixtures.tiny_model import build_tiny_hf_model
    from train_jax.convert.hf_export import to_hf
    from train_jax.convert.hf_import import from_hf
    from train_jax.train.grpo.rollout_engines import engine_spec

    source = build_tiny_hf_model(work / "source", tie_word_embeddings=tied)
    cfg, params = from_hf(source)
    rng = np.random.default_rng(1)
    perturbed = _tree_map(lambda a: (a + rng.normal(0, 0.05, a.shape)).astype(a.dtype), params)
    reference = _transformers_logprobs(to_hf(perturbed, cfg, work / "perturbed",
                                             assets_from=source))
    engine = VllmRollout(engine_spec("vllm", cfg, params, source, work / "rollout", rows=2,
                                     width=len(PROMPT), max_new_tokens=4, temperature=1.0,
                                     eos_token_id=2, dtype="float32"))

    def served() -> list[float]:
        from vllm import SamplingParams

        out = engine.llm.generate([{"prompt_token_ids": PROMPT}],
                                  SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        return [next(iter(row.values())).logprob for row in out[0].prompt_logprobs[1:]]

    before = served()
    engine.load(perturbed, {})
    after = served()
    return {"before": max(abs(a - b) for a, b in zip(before, reference, strict=True)),
            "after": max(abs(a - b) for a, b in zip(after, reference, strict=True))}


def _tree_map(fn, tree):
    return {k: _tree_map(fn, v) if isinstance(v, dict) else fn(np.asarray(v))
            for k, v in tree.items()}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2] == "tied")))
