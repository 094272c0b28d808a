"""POST /v1/completions (plain prompts, text or token ids, optionally batched)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve.deps import EngineDep, StateDep
from serve.engine import Engine, find_model
from serve.errors import InvalidRequestError, error_chunk, stream_error
from serve.generation import GenerationRun
from serve.openapi import GENERATION_RESPONSES
from serve.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    new_id,
    now,
)
from serve.routes.launch import arrival_time, collect, start_run, usage_of
from serve.streaming import (
    DONE,
    ClientDisconnected,
    SSEResponse,
    client_closed_response,
    sse,
    unless_disconnected,
)

router = APIRouter(tags=["completions"])

# OpenAI's legacy completions default; chat defaults to the rest of the context instead.
DEFAULT_COMPLETION_MAX_TOKENS = 16


@router.post("/v1/completions", response_model=CompletionResponse,
             responses=GENERATION_RESPONSES)
async def create_completion(body: CompletionRequest, request: Request, state: StateDep,
                            engine: EngineDep) -> Response:
    arrival = arrival_time()
    request_id = request.state.request_id = new_id("cmpl")
    card = find_model(engine, body.model)
    prompts = await _prompt_token_ids(engine, body)
    run = start_run(state=state, engine=engine, request=request, body=body, card=card,
                    prompts=prompts, prompt_param="prompt", max_tokens=body.max_tokens,
                    default_max_tokens=DEFAULT_COMPLETION_MAX_TOKENS, arrival=arrival,
                    prompt_for_log=str(body.prompt))
    created = now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(_stream(run, request_id, created, include_usage), on_close=run.close,
                           headers={"X-Request-Id": request_id})
    try:
        result = await unless_disconnected(request, collect(run))
    except ClientDisconnected:
        return client_closed_response()
    finally:
        await run.close()
    choices = [CompletionChoice(index=i, text=result.text(i), finish_reason=result.finish.get(i))
               for i in range(run.num_choices)]
    response = CompletionResponse(id=request_id, created=created, model=card.name,
                                  choices=choices, usage=usage_of(run))
    return JSONResponse(response.model_dump(), headers={"X-Request-Id": request_id})


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


async def _stream(run: GenerationRun, request_id: str, created: int, include_usage: bool):
    head = f'{{"id":"{request_id}","object":"text_completion","created":{created},' \
           f'"model":{json.dumps(run.model)},"choices":['
    try:
        async for delta in run.deltas():
            choice = {"index": delta.index, "text": delta.text, "logprobs": None,
                      "finish_reason": delta.finish_reason}
            yield sse(head + json.dumps(choice) + "]}")
        if include_usage:
            usage = usage_of(run).model_dump_json()
            yield sse(head + f'],"usage":{usage}}}')
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, end stream
        yield error_chunk(stream_error(exc))
    yield DONE
