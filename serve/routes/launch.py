"""Steps shared by the completion and chat handlers: admit, start, collect."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from fastapi import Request

from serve.deps import ServerState
from serve.engine import (
    Engine,
    GenerationRequest,
    ModelCard,
    StructuredOutput,
    TokenLogprob,
    ToolCallParsing,
)
from serve.errors import InvalidRequestError, ServiceUnavailableError, stream_error
from serve.generation import GenerationRun
from serve.protocol import SamplingFields, Usage
from serve.sampling import build_sampling, check_prompt_tokens


async def start_run(
    *,
    state: ServerState,
    engine: Engine,
    request: Request,
    body: SamplingFields,
    card: ModelCard,
    prompts: Sequence[Sequence[int]],
    prompt_param: str,
    max_tokens: int | None,
    default_max_tokens: int | None,
    arrival: float,
    prompt_for_log: str,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    structured: StructuredOutput | None = None,
    tool_parsing: ToolCallParsing | None = None,
) -> GenerationRun:
    """Validate against the model (and the engine's own checks, e.g. its structured-output
    backend compiling the constraint), take an in-flight slot, and build the run (not
    started). Every 400 comes before the response starts, also when streaming.

    `tool_parsing` (chat with `tool_choice: "auto"`) sets how the output is detokenised, as
    the tool-call parser asks; its constraint comes in `structured`.
    """
    check_prompt_tokens(prompts, card, prompt_param)
    sampling, n = build_sampling(body, card=card, longest_prompt=max(len(p) for p in prompts),
                                 max_tokens=max_tokens, default_max_tokens=default_max_tokens,
                                 max_n=state.settings.max_n, logprobs=logprobs,
                                 prompt_logprobs=prompt_logprobs, structured=structured)
    if tool_parsing is not None:
        sampling = replace(
            sampling, skip_special_tokens=tool_parsing.skip_special_tokens,
            spaces_between_special_tokens=tool_parsing.spaces_between_special_tokens)
    if body.stream_options is not None and not body.stream:
        raise InvalidRequestError("'stream_options' is only allowed with 'stream': true",
                                  param="stream_options", code="invalid_value")
    await engine.check(GenerationRequest(request.state.request_id, card.name,
                                         tuple(prompts[0]), sampling))
    ticket = state.admission.admit(request.state.request_id)
    detail = "".join(f" {key}={value!r}" for key, value in _end_user(body).items())
    if state.settings.log_prompts:
        detail += f" prompt={prompt_for_log!r}"
    return GenerationRun(engine=engine, metrics=state.metrics, admission=state.admission,
                         ticket=ticket, model=card.name, prompts=prompts, sampling=sampling,
                         n=n, arrival=arrival, log_detail=detail)


def _end_user(body: SamplingFields) -> dict[str, str]:
    """The end-user ids a client sent (`user`, chat's `safety_identifier`), for the log line."""
    ids = {"user": body.user, "safety_identifier": getattr(body, "safety_identifier", None)}
    return {key: value for key, value in ids.items() if value}


@dataclass
class Collected:
    """The full text (and token ids) and finish reason of every choice of a non-streaming
    request."""

    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    prompt_logprobs: dict[int, tuple[TokenLogprob, ...]] = field(default_factory=dict)
    token_ids: dict[int, list[int]] = field(default_factory=dict)

    def text(self, index: int) -> str:
        return "".join(self.texts.get(index, ()))


async def collect(run: GenerationRun) -> Collected:
    """Drain `run`; a choice the engine aborted (shutdown) becomes a 503, an engine failure a
    500 (both with the OpenAI error body)."""
    out = Collected({i: [] for i in range(run.num_choices)})
    try:
        async for delta in run.deltas():
            out.texts[delta.index].append(delta.text)
            out.token_ids.setdefault(delta.index, []).extend(delta.token_ids)
            if delta.logprobs is not None:
                out.logprobs.setdefault(delta.index, []).extend(delta.logprobs)
            if delta.prompt_logprobs is not None:
                out.prompt_logprobs[delta.index] = delta.prompt_logprobs
            if delta.finish_reason is not None:
                out.finish[delta.index] = delta.finish_reason
    except Exception as exc:  # an engine failure becomes an error response
        raise stream_error(exc) from exc
    if any(reason == "abort" for reason in out.finish.values()):
        raise ServiceUnavailableError("The request was aborted by the server (shutting down)",
                                      code="aborted")
    return out


def usage_of(run: GenerationRun) -> Usage:
    s = run.summary
    return Usage(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens,
                 total_tokens=s.prompt_tokens + s.completion_tokens)


def arrival_time() -> float:
    return time.monotonic()
