"""GRPO rollouts from an in-process vLLM engine (`objective.grpo.rollout: vllm`).

The engine starts from the HF folder of the run's starting weights; before a rollout on
parameters it has not seen, the policy's tensors (adapters merged) are loaded into its model in
place and its prefix cache is dropped (cached prompt KV would be the old policy's). Each row is
one request with its own seed drawn from the rollout key, so a resumed run samples what the
uninterrupted one did.

The engine runs in the training process (VLLM_ENABLE_V1_MULTIPROCESSING=0): its model is then
the one `load_weights` reaches, with no copy of the weights between processes.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import numpy as np

from train_jax.train.grpo.rollout_engines import RolloutEngineSpec

logger = logging.getLogger(__name__)

# GiB of KV cache for the rollout engine when VLLM_CPU_KVCACHE_SPACE is unset: the rollout batch
# (rows x (prompt + new tokens)) of the shipped GRPO configs needs a small fraction of it.
DEFAULT_KV_CACHE_GIB = "1"


class VllmRollout:
    """`rollout(trainable, frozen, prompts, pad, key) -> (tokens, counts)` sampled by vLLM."""

    def __init__(self, spec: RolloutEngineSpec):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KV_CACHE_GIB)
        from vllm import LLM
        from vllm.platforms import current_platform

        self.spec = spec
        total = spec.width + spec.max_new_tokens
        started = time.perf_counter()
        # Eager on a CPU: torch.compile there costs over a minute of start-up for a modest
        # decoding gain (docs/BENCHMARKS.md); on a GPU vLLM's default (compiled, CUDA graphs).
        eager = current_platform.is_cpu()
        # Every row prefilled in one scheduler step: vLLM on CPU cannot rewind a seeded
        # request's generator after a chunked (partial) prefill, which would break exact resume.
        self.llm = LLM(model=str(spec.model_dir), dtype=spec.dtype, seed=0,
                       max_model_len=total, max_num_seqs=spec.rows,
                       max_num_batched_tokens=spec.rows * total, enforce_eager=eager)
        logger.info("vllm rollout engine started in %.1f s (%s, %d rows of up to %d tokens)",
                    time.perf_counter() - started, spec.dtype, spec.rows, total)
        self._loaded: Any = None  # the trainable tree the engine's weights were loaded from

    def load(self, trainable: Any, frozen: Any) -> None:
        """Load the policy's current weights into the engine's model (no-op if unchanged)."""
        if trainable is self._loaded:
            return
        import torch

        started = time.perf_counter()
        dtype = getattr(torch, self.spec.dtype)  # the engine's own, so nothing is re-cast there
        tensors = [(name, torch.from_numpy(array).to(dtype))
                   for name, array in self.spec.weights(trainable, frozen)]
        self.llm.collective_rpc(_load_weights, args=(tensors,))
        self.llm.reset_prefix_cache()
        self._loaded = trainable
        logger.debug("vllm rollout: weights loaded in %.2f s", time.perf_counter() - started)

    def __call__(self, trainable: Any, frozen: Any, prompts: np.ndarray, pad: np.ndarray,
                 key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        from vllm import SamplingParams

        if prompts.shape != (self.spec.rows, self.spec.width):
            raise ValueError(f"rollout prompts {prompts.shape}, engine set up for "
                             f"{(self.spec.rows, self.spec.width)}")
        self.load(trainable, frozen)
        seeds = np.random.default_rng(np.asarray(jax.random.key_data(key))).integers(
            0, 2**31 - 1, size=len(prompts))
        params = [SamplingParams(temperature=self.spec.temperature,
                                 max_tokens=self.spec.max_new_tokens,
                                 stop_token_ids=list(self.spec.eos_token_ids),
                                 seed=int(seed), detokenize=False) for seed in seeds]
        requests = [{"prompt_token_ids": [int(t) for t in row[int(p):]]}
                    for row, p in zip(prompts, pad, strict=True)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        tokens = np.zeros((len(prompts), self.spec.max_new_tokens), np.int32)
        counts = np.zeros(len(prompts), np.int32)
        for i, output in enumerate(outputs):
            ids = list(output.outputs[0].token_ids)
            tokens[i, :len(ids)] = ids
            counts[i] = len(ids)
        return tokens, counts


def _load_weights(worker: Any, tensors: list[tuple[str, Any]]) -> None:
    # Runs on vLLM's worker (in this process). vLLM's in-place reload takes checkpoint-format
    # tensors (HF names; it fuses q/k/v and gate/up and redoes the CPU kernels' weight packing),
    # where the model's plain `load_weights` no longer can once the weights were processed.
    worker.reload_weights(weights_iterator=iter(tensors), is_checkpoint_format=True)


def register() -> None:
    """Register the engine as `objective.grpo.rollout: vllm` (when vLLM is installed)."""
    from train_jax.train.grpo.rollout_engines import register_rollout_engine

    register_rollout_engine("vllm", VllmRollout)
