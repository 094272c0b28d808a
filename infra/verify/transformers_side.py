"""The exported HF folder in transformers (float32): the reference the other runtimes meet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class TransformersReference:
    """An HF folder loaded in transformers in float32 (bf16/fp16 weights are upcast exactly)."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def encode(self, prompt: str) -> list[int]:
        """The prompt's token ids as every runtime receives them (special tokens added)."""
        ids = self.tokenizer(prompt)["input_ids"]
        if len(ids) < 2:
            raise ValueError(f"prompt {prompt[:40]!r} has fewer than 2 tokens: nothing to score")
        return list(ids)

    def logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """(T, V) float32 log-probabilities of the next token after each prefix of `ids`."""
        torch = self._torch
        with torch.no_grad():
            logits = self.model(torch.as_tensor([list(ids)], dtype=torch.long)).logits[0]
            return torch.log_softmax(logits.float(), dim=-1).numpy()

    def greedy(self, ids: Sequence[int], max_new_tokens: int) -> str:
        """The greedy continuation's text (special tokens skipped, as the server returns it)."""
        torch = self._torch
        with torch.no_grad():
            out = self.model.generate(torch.as_tensor([list(ids)], dtype=torch.long),
                                      attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      do_sample=False, max_new_tokens=max_new_tokens,
                                      temperature=None, top_p=None, top_k=None,
                                      pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)

    def divergence_gap(self, ids: Sequence[int], text_a: str, text_b: str) -> float | None:
        """None when two continuations of `ids` agree; else how decisively they disagree.

        The server returns text, not token ids, so both continuations are re-tokenised with
        the model's tokenizer; at the first token where they differ (an end of sequence
        standing in for the shorter one) the answer is |log p(a's token) - log p(b's token)|
        under this model given the shared prefix.
        """
        a = self.tokenizer(text_a, add_special_tokens=False)["input_ids"]
        b = self.tokenizer(text_b, add_special_tokens=False)["input_ids"]
        if a == b:
            return None
        j = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        eos = self.tokenizer.eos_token_id
        token_a = a[j] if j < len(a) else eos
        token_b = b[j] if j < len(b) else eos
        if token_a is None or token_b is None:
            return float("inf")  # one stopped, and the model names no end-of-sequence token
        row = self.logprobs([*ids, *a[:j]])[-1]
        return float(abs(row[token_a] - row[token_b]))
