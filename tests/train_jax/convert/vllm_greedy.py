"""Greedy continuation of token prompts with vLLM, as a subprocess (vLLM spawns its engine core).

Usage: python -m tests.train_jax.convert.vllm_greedy MODEL_DIR MAX_TOKENS DTYPE OUT_JSON < prompts.json
writes {"outputs": [[token ids], ...]} to OUT_JSON (vLLM itself prints to stdout).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    model_dir, max_tokens, dtype, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    prompts = json.loads(sys.stdin.read())
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model_dir, dtype=dtype, enforce_eager=True, gpu_memory_utilization=0.15,
              max_model_len=256, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    results = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    with open(out_path, "w") as out:
        json.dump({"outputs": [list(r.outputs[0].token_ids) for r in results]}, out)


if __name__ == "__main__":
    main()
