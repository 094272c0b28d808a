"""POST /v1/chat/completions (messages rendered with the model's chat template)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve.deps import EngineDep, StateDep
from serve.engine import find_model
from serve.errors import error_chunk, stream_error
from serve.generation import GenerationRun
from serve.openapi import GENERATION_RESPONSES
from serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
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

router = APIRouter(tags=["chat"])


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=GENERATION_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 state: StateDep, engine: EngineDep) -> Response:
    arrival = arrival_time()
    request_id = request.state.request_id = new_id("chatcmpl")
    card = find_model(engine, body.model)
    messages = [m.for_template() for m in body.messages]
    prompt_text = await engine.render_chat(body.model, messages)
    # The template already placed any BOS token: adding special tokens again would double it,
    # unless the client asks for it (vLLM's `add_special_tokens`).
    prompt_ids = await engine.encode(body.model, prompt_text,
                                     add_special_tokens=bool(body.add_special_tokens))
    run = start_run(state=state, engine=engine, request=request, body=body, card=card,
                    prompts=[prompt_ids], prompt_param="messages",
                    max_tokens=body.effective_max_tokens(), default_max_tokens=None,
                    arrival=arrival, prompt_for_log=prompt_text)
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
    choices = [ChatChoice(index=i, message=AssistantMessage(content=result.text(i)),
                          finish_reason=result.finish.get(i)) for i in range(run.num_choices)]
    response = ChatCompletionResponse(id=request_id, created=created, model=card.name,
                                      choices=choices, usage=usage_of(run))
    return JSONResponse(response.model_dump(), headers={"X-Request-Id": request_id})


async def _stream(run: GenerationRun, request_id: str, created: int, include_usage: bool):
    head = f'{{"id":"{request_id}","object":"chat.completion.chunk","created":{created},' \
           f'"model":{json.dumps(run.model)},"choices":['
    try:
        # OpenAI opens every choice with a role-only delta.
        for index in range(run.num_choices):
            first = {"index": index, "delta": {"role": "assistant", "content": ""},
                     "logprobs": None, "finish_reason": None}
            yield sse(head + json.dumps(first) + "]}")
        async for delta in run.deltas():
            content = {"content": delta.text} if delta.text else {}
            choice = {"index": delta.index, "delta": content, "logprobs": None,
                      "finish_reason": delta.finish_reason}
            yield sse(head + json.dumps(choice) + "]}")
        if include_usage:
            usage = usage_of(run).model_dump_json()
            yield sse(head + f'],"usage":{usage}}}')
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, end stream
        yield error_chunk(stream_error(exc))
    yield DONE
