"""Request checks that depend on the served model, and the request -> SamplingOptions mapping."""

from __future__ import annotations

from collections.abc import Sequence

from serve.engine import ModelCard, SamplingOptions, StructuredOutput
from serve.errors import InvalidRequestError
from serve.protocol import SamplingFields

MAX_STOP_SEQUENCES = 16


def unsupported(param: str, why: str = "") -> InvalidRequestError:
    return InvalidRequestError(f"'{param}' is not supported by this server{why}", param=param,
                               code="unsupported_parameter")


def check_prompt_tokens(prompts: Sequence[Sequence[int]], card: ModelCard, param: str) -> None:
    """Reject empty prompts, prompts that fill the context, and ids outside the vocabulary."""
    for i, ids in enumerate(prompts):
        where = f"{param}[{i}]" if len(prompts) > 1 else param
        if not ids:
            raise InvalidRequestError(f"'{where}' is empty: give at least one token of prompt",
                                      param=param, code="empty_prompt")
        if len(ids) >= card.max_model_len:
            raise InvalidRequestError(
                f"This model's maximum context length is {card.max_model_len} tokens, but "
                f"'{where}' has {len(ids)} tokens, which leaves no room for output. Shorten the "
                "prompt.", param=param, code="context_length_exceeded")
        bad = next((t for t in ids if not 0 <= t < card.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"Token id {bad} in '{where}' is outside the vocabulary (0..{card.vocab_size - 1})",
                param=param, code="invalid_token_id")


def build_sampling(
    request: SamplingFields,
    *,
    card: ModelCard,
    longest_prompt: int,
    max_tokens: int | None,
    default_max_tokens: int | None,
    max_n: int,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    structured: StructuredOutput | None = None,
) -> tuple[SamplingOptions, int]:
    """The per-sequence sampling options and `n`, or a 400 naming the offending field.

    `max_tokens` is the request's value (already >= 1); None means `default_max_tokens`,
    clipped to what the context leaves (None: all of it). `logprobs`, `prompt_logprobs` and
    `structured` are the endpoint's reading of its fields (see the routes).
    """
    if request.prompt_logprobs is not None and request.stream:
        # As vLLM answers it: prompt logprobs are not sent in stream chunks (echo's are).
        raise InvalidRequestError("'prompt_logprobs' is not available with 'stream': true",
                                  param="prompt_logprobs", code="invalid_value")
    n = 1 if request.n is None else request.n
    if n > max_n:
        raise InvalidRequestError(f"'n' is {n}; this server allows at most {max_n} choices per "
                                  "request", param="n", code="n_too_large")
    room = card.max_model_len - longest_prompt
    if max_tokens is not None:
        if max_tokens > room:
            raise InvalidRequestError(
                f"This model's maximum context length is {card.max_model_len} tokens. The prompt "
                f"has {longest_prompt} tokens and max_tokens asks for {max_tokens} more "
                f"({longest_prompt + max_tokens} in total). Lower max_tokens to at most {room}.",
                param="max_tokens", code="context_length_exceeded")
        effective = max_tokens
    else:
        effective = room if default_max_tokens is None else min(default_max_tokens, room)
    stops = request.stop_strings()
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"'stop' has {len(stops)} sequences; at most "
                                  f"{MAX_STOP_SEQUENCES} are allowed", param="stop",
                                  code="invalid_value")
    if any(s == "" for s in stops):
        raise InvalidRequestError("'stop' sequences must not be empty strings", param="stop",
                                  code="invalid_value")
    # A field the request leaves out (None) keeps the default `SamplingOptions` gives it.
    given = {"temperature": request.temperature, "top_p": request.top_p,
             "presence_penalty": request.presence_penalty,
             "frequency_penalty": request.frequency_penalty, "ignore_eos": request.ignore_eos}
    options = SamplingOptions(max_tokens=effective, seed=request.seed, stop=stops,
                              logprobs=logprobs, prompt_logprobs=prompt_logprobs,
                              structured=structured,
                              **{k: v for k, v in given.items() if v is not None})
    return options, n
