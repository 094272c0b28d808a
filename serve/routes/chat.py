"""POST /v1/chat/completions (messages rendered with the model's chat template)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve.deps import EngineDep, StateDep
from serve.engine import ToolCallRequest, find_model
from serve.errors import InvalidRequestError, error_chunk, stream_error
from serve.generation import GenerationRun
from serve.logprobs import chat_logprobs, prompt_logprobs
from serve.openapi import GENERATION_RESPONSES
from serve.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
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
from serve.tool_calls import ToolReader, plan_tools

router = APIRouter(tags=["chat"])


def _top_logprobs(body: ChatCompletionRequest) -> int | None:
    """The candidates per token the request asks for (None: no logprobs), as vLLM reads
    `logprobs` + `top_logprobs`."""
    if not body.logprobs:
        if body.top_logprobs:
            raise InvalidRequestError("'top_logprobs' needs 'logprobs': true",
                                      param="top_logprobs", code="invalid_value")
        return None
    return body.top_logprobs or 0


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses=GENERATION_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 state: StateDep, engine: EngineDep) -> Response:
    arrival = arrival_time()
    request_id = request.state.request_id = new_id("chatcmpl")
    card = find_model(engine, body.model)
    top_k = _top_logprobs(body)
    tools = plan_tools(body, state.settings.tool_call_parser)
    structured = tools.constraint or structured_output(body)
    messages = [m.for_template() for m in body.messages]
    prompt_text = await engine.render_chat(body.model, messages, tools=tools.template_tools)
    # The template already placed any BOS token: adding special tokens again would double it,
    # unless the client asks for it (vLLM's `add_special_tokens`).
    prompt_ids = await engine.encode(body.model, prompt_text,
                                     add_special_tokens=bool(body.add_special_tokens))
    parsing = None
    if tools.mode == "auto":
        # The parser may ask for its own constraint and detokenisation (vLLM's adjust_request).
        parsing = await engine.tool_call_parsing(body.model, ToolCallRequest(
            tuple(messages), tuple(tools.template_tools or ()), tuple(prompt_ids),
            body.parallel_tool_calls, structured))
        structured = parsing.structured
    run = await start_run(state=state, engine=engine, request=request, body=body, card=card,
                          prompts=[prompt_ids], prompt_param="messages",
                          max_tokens=body.effective_max_tokens(), default_max_tokens=None,
                          arrival=arrival, prompt_for_log=prompt_text, logprobs=top_k,
                          prompt_logprobs=body.prompt_logprobs, structured=structured,
                          tool_parsing=parsing)
    try:  # one parser per choice: they keep state while streaming
        parsers = None if parsing is None else \
            [parsing.new_parser() for _ in range(run.num_choices)]
    except BaseException:
        await run.close()
        raise
    reader = ToolReader(tools, parsers, body.parallel_tool_calls)
    created = now()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(_stream(run, request_id, created, include_usage, top_k, reader),
                           on_close=run.close, headers={"X-Request-Id": request_id})
    try:
        result = await unless_disconnected(request, collect(run))
    except ClientDisconnected:
        return client_closed_response()
    finally:
        await run.close()
    choices = [_choice(i, result, top_k, reader) for i in range(run.num_choices)]
    given = result.prompt_logprobs.get(0)
    response = ChatCompletionResponse(
        id=request_id, created=created, model=card.name, choices=choices, usage=usage_of(run),
        prompt_logprobs=None if body.prompt_logprobs is None or given is None else
        prompt_logprobs(given, body.prompt_logprobs))
    return JSONResponse(response.model_dump(), headers={"X-Request-Id": request_id})


def _choice(i: int, result: Collected, top_k: int | None, reader: ToolReader) -> ChatChoice:
    message, reason = reader.message(i, result.text(i), result.token_ids.get(i, []),
                                     result.finish.get(i))
    logprobs = None if top_k is None else chat_logprobs(result.logprobs.get(i, []), top_k)
    return ChatChoice(index=i, message=message, logprobs=logprobs, finish_reason=reason)


async def _stream(run: GenerationRun, request_id: str, created: int, include_usage: bool,
                  top_k: int | None, reader: ToolReader):
    head = f'{{"id":"{request_id}","object":"chat.completion.chunk","created":{created},' \
           f'"model":{json.dumps(run.model)},"choices":['
    try:
        # OpenAI opens every choice with a role-only delta.
        for index in range(run.num_choices):
            first = {"index": index, "delta": {"role": "assistant", "content": ""},
                     "logprobs": None, "finish_reason": None}
            yield sse(head + json.dumps(first) + "]}")
        async for delta in run.deltas():
            logprobs = None if top_k is None else \
                chat_logprobs(delta.logprobs or (), top_k).model_dump()
            shaped = reader.delta(delta, logprobs is not None)
            if shaped is None:
                continue
            content, reason = shaped
            choice = {"index": delta.index, "delta": content, "logprobs": logprobs,
                      "finish_reason": reason}
            yield sse(head + json.dumps(choice) + "]}")
        if include_usage:
            usage = usage_of(run).model_dump_json()
            yield sse(head + f'],"usage":{usage}}}')
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, end stream
        yield error_chunk(stream_error(exc))
    yield DONE
