"""POST /v1/completions (plain prompts, text or token ids, optionally batched)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve.deps import EngineDep, StateDep
from serve.engine import Engine, TokenLogprob, find_model
from serve.errors import InvalidRequestError, error_chunk, stream_error
from serve.generation import ChoiceDelta, GenerationRun
from serve.logprobs import completion_logprobs, next_offset, prompt_logprobs
from serve.openapi import GENERATION_RESPONSES
from serve.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    new_id,
    now,
)
from serve.routes.launch import Collected, arrival_time, collect, start_run, usage_of
from serve.streaming import (
    DONE,
    ClientDisconnected,
    SSEResponse,
    client_closed_response,
    sse,
    unless_disconnected,
)
from serve.structured import structured_output

router = APIRouter(tags=["completions"])

# OpenAI's legacy completions default; chat defaults to the rest of the context instead.
DEFAULT_COMPLETION_MAX_TOKENS = 16


@dataclass
class _Echo:
    """What `echo` and `logprobs` ask of each choice's text and logprobs.

    `prompt_texts[p]` is prompt p as the client gave it (token-id prompts decoded);
    `only` is echo with max_tokens 0: the prompt is scored, nothing generated is returned.
    """

    on: bool
    only: bool
    logprobs: int | None
    prompt_texts: list[str] = field(default_factory=list)
    choices_per_prompt: int = 1

    def prompt_text(self, index: int) -> str:
        return self.prompt_texts[index // self.choices_per_prompt]


@router.post("/v1/completions", response_model=CompletionResponse,
             responses=GENERATION_RESPONSES)
async def create_completion(body: CompletionRequest, request: Request, state: StateDep,
                            engine: EngineDep) -> Response:
    arrival = arrival_time()
    request_id = request.state.request_id = new_id("cmpl")
    card = find_model(engine, body.model)
    prompts = await _prompt_token_ids(engine, body)
    echo = _Echo(on=bool(body.echo), only=bool(body.echo) and body.max_tokens == 0,
                 logprobs=body.logprobs)
    if body.max_tokens == 0 and not echo.on:
        raise InvalidRequestError("'max_tokens' must be at least 1 (0 only with 'echo': true, "
                                  "to score the prompt)", param="max_tokens",
                                  code="invalid_value")
    # As vLLM: echo with logprobs scores the prompt with the same number of candidates.
    prompt_k = body.prompt_logprobs
    if prompt_k is None and echo.on and body.logprobs is not None:
        prompt_k = body.logprobs
    run = await start_run(state=state, engine=engine, request=request, body=body, card=card,
                          prompts=prompts, prompt_param="prompt",
                          # vLLM generates one token it then drops for echo-only requests.
                          max_tokens=1 if echo.only else body.max_tokens,
                          default_max_tokens=DEFAULT_COMPLETION_MAX_TOKENS, arrival=arrival,
                          prompt_for_log=str(body.prompt), logprobs=body.logprobs,
                          prompt_logprobs=prompt_k, structured=structured_output(body))
    if echo.on:
        echo.prompt_texts = await _prompt_texts(engine, body, prompts)
        echo.choices_per_prompt = run.num_choices // len(prompts)
    created = now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(_stream(run, request_id, created, include_usage, echo),
                           on_close=run.close, headers={"X-Request-Id": request_id})
    try:
        result = await unless_disconnected(request, collect(run))
    except ClientDisconnected:
        return client_closed_response()
    finally:
        await run.close()
    choices = [_choice(i, result, echo, prompt_k) for i in range(run.num_choices)]
    response = CompletionResponse(id=request_id, created=created, model=card.name,
                                  choices=choices, usage=usage_of(run))
    return JSONResponse(response.model_dump(), headers={"X-Request-Id": request_id})


def _choice(i: int, result: Collected, echo: _Echo, prompt_k: int | None) -> CompletionChoice:
    text, generated = result.text(i), result.logprobs.get(i, [])
    prompt_positions = result.prompt_logprobs.get(i, ())
    if echo.only:
        text, generated = "", []
    positions: list[TokenLogprob] = list(generated)
    if echo.on:
        text = echo.prompt_text(i) + text
        positions = [*prompt_positions, *positions]
    return CompletionChoice(
        index=i, text=text, finish_reason=result.finish.get(i),
        logprobs=None if echo.logprobs is None else completion_logprobs(positions,
                                                                        echo.logprobs),
        prompt_logprobs=None if prompt_k is None else prompt_logprobs(prompt_positions,
                                                                      prompt_k))


async def _prompt_token_ids(engine: Engine, body: CompletionRequest) -> list[list[int]]:
    prompt = body.prompt
    special = body.add_special_tokens is not False  # text prompts get BOS unless told not to
    if isinstance(prompt, str):
        return [await engine.encode(body.model, prompt, add_special_tokens=special)]
    if not prompt:
        raise InvalidRequestError("'prompt' must not be an empty list", param="prompt",
                                  code="empty_prompt")
    if isinstance(prompt[0], str):
        return [await engine.encode(body.model, text, add_special_tokens=special)
                for text in prompt]
    if isinstance(prompt[0], int):
        return [list(prompt)]
    return [list(ids) for ids in prompt]


async def _prompt_texts(engine: Engine, body: CompletionRequest,
                        prompts: list[list[int]]) -> list[str]:
    """Each prompt's text for `echo`: as sent, or decoded when sent as token ids (as vLLM)."""
    if isinstance(body.prompt, str):
        return [body.prompt]
    if isinstance(body.prompt[0], str):
        return list(body.prompt)  # type: ignore[arg-type]
    return [await engine.decode(body.model, ids) for ids in prompts]


@dataclass
class _StreamState:
    """Per choice: whether the prompt was echoed yet, and the next logprobs text offset."""

    echoed: set[int] = field(default_factory=set)
    offsets: dict[int, int] = field(default_factory=dict)


def _chunk_choice(delta: ChoiceDelta, echo: _Echo, state: _StreamState) -> dict | None:
    """One choice of a stream chunk, or None when the delta carries nothing to send."""
    i = delta.index
    text, positions = delta.text, list(delta.logprobs or ())
    if echo.only:
        text, positions = "", []
    if echo.on and i not in state.echoed:
        state.echoed.add(i)
        text = echo.prompt_text(i) + text
        positions = [*(delta.prompt_logprobs or ()), *positions]
    if not text and not positions and delta.finish_reason is None:
        return None  # e.g. a delta that only brought prompt logprobs, not echoed
    logprobs = None
    if echo.logprobs is not None:
        start = state.offsets.get(i, 0)
        formatted = completion_logprobs(positions, echo.logprobs, start)
        state.offsets[i] = next_offset(formatted, start)
        logprobs = formatted.model_dump()
    return {"index": i, "text": text, "logprobs": logprobs,
            "finish_reason": delta.finish_reason}


async def _stream(run: GenerationRun, request_id: str, created: int, include_usage: bool,
                  echo: _Echo):
    head = f'{{"id":"{request_id}","object":"text_completion","created":{created},' \
           f'"model":{json.dumps(run.model)},"choices":['
    state = _StreamState()
    try:
        async for delta in run.deltas():
            choice = _chunk_choice(delta, echo, state)
            if choice is not None:
                yield sse(head + json.dumps(choice) + "]}")
        if include_usage:
            usage = usage_of(run).model_dump_json()
            yield sse(head + f'],"usage":{usage}}}')
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, end stream
        yield error_chunk(stream_error(exc))
    yield DONE
