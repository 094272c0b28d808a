"""Flax vs transformers (PyTorch) logits on the same tokens, both in float32."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train_jax.convert.flax_model import load_flax_model, logits_fn

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Once upon a time, a curious fox asked the old owl why the stars shine at night."


@dataclass(frozen=True)
class ParityReport:
    """Result of `compare_with_transformers`."""

    num_tokens: int
    max_abs_diff: float
    reference_abs_max: float
    greedy_agreement: int  # positions whose argmax token is the same
    decisive_disagreements: int  # disagreements where the reference's top-2 gap exceeds the diff

    def passed(self, tolerance: float) -> bool:
        """Within tolerance and no argmax disagreement that is not a near-tie."""
        return self.max_abs_diff <= tolerance and self.decisive_disagreements == 0


def compare_with_transformers(model_dir: str | Path, prompt: str = DEFAULT_PROMPT) -> ParityReport:
    """Tokenise `prompt` with the folder's tokenizer and compare both models' fp32 logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = np.asarray([tokenizer(prompt)["input_ids"]], np.int32)
    if ids.shape[1] == 0:
        raise ValueError("the prompt tokenises to zero tokens; pass a longer --prompt")
    _, model = load_flax_model(model_dir, dtype="float32", param_dtype="float32")
    ours = np.asarray(logits_fn(model)(ids))[0]
    del model
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = reference(torch.as_tensor(ids, dtype=torch.long)).logits[0].float().numpy()
    diff = np.abs(ours - ref)
    max_diff = float(diff.max())
    agree = ours.argmax(-1) == ref.argmax(-1)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    decisive = (~agree) & ((top2[:, 1] - top2[:, 0]) > 2 * max_diff)
    return ParityReport(num_tokens=int(ids.shape[1]), max_abs_diff=max_diff,
                        reference_abs_max=float(np.abs(ref).max()),
                        greedy_agreement=int(agree.sum()), decisive_disagreements=int(decisive.sum()))
