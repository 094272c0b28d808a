"""Between our plain engine data and vLLM's: `SamplingOptions` -> vLLM `SamplingParams` (with
its `StructuredOutputsParams`), vLLM's per-position logprob dicts -> `TokenLogprob`s, and our
`--dtype` -> vLLM's `dtype`.

Imported only by `serve.vllm_engine`, i.e. only when a vLLM engine runs. Constrained decoding
is entirely vLLM's (its structured-output backend, xgrammar by default); this module only
names the constraint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serve.engine import SamplingOptions, StructuredOutput, TokenLogprob, TopLogprob

# vLLM reports -inf for impossible tokens; JSON has no infinity, and OpenAI (and vLLM's own
# server) send -9999.0 instead.
MIN_LOGPROB = -9999.0


def engine_dtype(model_dir: Path, dtype: str) -> str:
    """vLLM's `dtype` for serving `model_dir` with our `dtype`, where `auto` is the checkpoint's.

    vLLM's own `auto` runs a float32 checkpoint in the device's first half type (bfloat16 on
    CPUs with bf16 and on recent GPUs: `vllm/config/model.py` `_resolve_auto_dtype`, "Downcast
    for float32 models"), so a float32 export would be served, and scored, in bfloat16. A
    float32 checkpoint is asked for as float32; any other keeps vLLM's `auto` (its own dtype).
    """
    if dtype != "auto":
        return dtype
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return dtype  # vLLM reports an unreadable folder itself, with its own message
    # transformers 5 writes `dtype`, 4.x `torch_dtype`.
    stored = config.get("dtype", config.get("torch_dtype"))
    return "float32" if stored == "float32" else dtype


def sampling_params(options: SamplingOptions) -> Any:
    """vLLM `SamplingParams` for one sequence, streaming deltas."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    s = options
    return SamplingParams(
        n=1, max_tokens=s.max_tokens, temperature=s.temperature, top_p=s.top_p,
        seed=s.seed, stop=list(s.stop) or None, presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty, ignore_eos=s.ignore_eos,
        logprobs=s.logprobs, prompt_logprobs=s.prompt_logprobs,
        structured_outputs=structured_outputs_params(s.structured),
        skip_special_tokens=s.skip_special_tokens,
        spaces_between_special_tokens=s.spaces_between_special_tokens,
        output_kind=RequestOutputKind.DELTA)


def structured_outputs_params(spec: StructuredOutput | None) -> Any:
    """vLLM's `StructuredOutputsParams` for `spec` (None: unconstrained)."""
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    value = list(spec.value) if spec.kind == "choice" else spec.value
    return StructuredOutputsParams(**{spec.kind: value})


def _token_text(token_id: int, entry: Any, tokenizer: Any) -> str:
    # As vLLM's server: the detokenizer's text when it made one, else the tokenizer's.
    text = getattr(entry, "decoded_token", None)
    return text if text is not None else tokenizer.decode([token_id])


def _clamp(logprob: float) -> float:
    return max(float(logprob), MIN_LOGPROB)


def _position(token_id: int, entries: Mapping[int, Any] | None, k: int,
              tokenizer: Any) -> TokenLogprob:
    """The `TokenLogprob` of `token_id` from vLLM's dict {token id: Logprob} at its position
    (the token itself plus the `k` best candidates, in rank order)."""
    if entries is None:  # a prompt's first token: nothing before it to condition on
        return TokenLogprob(token_id, tokenizer.decode([token_id]), None, None)
    own = entries.get(token_id)
    top = sorted((TopLogprob(tid, _token_text(tid, lp, tokenizer), _clamp(lp.logprob),
                             int(lp.rank))
                  for tid, lp in entries.items() if lp.rank is not None and lp.rank <= k),
                 key=lambda t: t.rank)
    if own is None:  # not expected from vLLM; keep the position rather than fail the request
        return TokenLogprob(token_id, tokenizer.decode([token_id]), None, None, tuple(top))
    return TokenLogprob(token_id, _token_text(token_id, own, tokenizer), _clamp(own.logprob),
                        None if own.rank is None else int(own.rank), tuple(top))


def token_logprobs(token_ids: Sequence[int], positions: Sequence[Mapping[int, Any] | None],
                   k: int, tokenizer: Any) -> tuple[TokenLogprob, ...]:
    """One `TokenLogprob` per token of `token_ids`, from vLLM's logprobs of the same tokens."""
    return tuple(_position(tid, entries, k, tokenizer)
                 for tid, entries in zip(token_ids, positions, strict=True))
