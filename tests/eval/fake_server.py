"""A fake OpenAI-compatible server with injected delays and failures, for eval tests.

Streams one chunk per word of its answer: the first after `ttft_s`, each next one after
`itl_s`, then a usage chunk and ``[DONE]``. The answer is looked up by prompt (or last user
message) in `answers`, else `default_answer`. Markers in the prompt inject failures:
``[[500]]`` -> HTTP 500, ``[[hang]]`` -> no answer for 60 s, ``[[cut]]`` -> the stream stops
without ``[DONE]`` after one chunk and the connection is dropped. GET /v1/models lists
`models`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.serve.fake_server import serve_in_thread


@dataclass
class FakeBehaviour:
    ttft_s: float = 0.0
    itl_s: float = 0.0
    default_answer: str = "one two three four five"
    answers: dict[str, str] = field(default_factory=dict)
    requests_seen: int = 0
    # Every generation request answers this HTTP status instead (a broken server).
    fail_status: int | None = None
    # What GET /v1/models lists (the eval's pre-flight check looks for its --model there).
    models: tuple[str, ...] = ("m", "fake", "base", "tuned")
    # Requests carrying `structured_outputs`: answered from `constrained_answers` (else as
    # above), or refused with a 400 as a server without constrained decoding does.
    constrained_answers: dict[str, str] = field(default_factory=dict)
    refuse_structured: bool = False
    bodies: list[dict] = field(default_factory=list)  # every generation request body


def _prompt_key(body: dict) -> str:
    if "prompt" in body:
        return body["prompt"]
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def create_fake_app(behaviour: FakeBehaviour) -> FastAPI:
    app = FastAPI()

    async def handle(request: Request, chat: bool):
        behaviour.requests_seen += 1
        body = await request.json()
        behaviour.bodies.append(body)
        key = _prompt_key(body)
        if "[[500]]" in key or behaviour.fail_status is not None:
            return JSONResponse({"error": {"message": "injected failure"}},
                                status_code=behaviour.fail_status or 500)
        constrained = body.get("structured_outputs") is not None
        if constrained and behaviour.refuse_structured:
            return JSONResponse({"error": {"message": "structured outputs are not supported",
                                           "param": "structured_outputs"}}, status_code=400)
        answer = behaviour.answers.get(key, behaviour.default_answer)
        if constrained:
            answer = behaviour.constrained_answers.get(key, answer)
        words = answer.split(" ")
        if body.get("max_tokens"):
            words = words[: body["max_tokens"]]

        def chunk(text: str) -> str:
            choice = ({"index": 0, "delta": {"content": text}, "finish_reason": None} if chat
                      else {"index": 0, "text": text, "finish_reason": None})
            return "data: " + json.dumps({"choices": [choice]}) + "\n\n"

        async def stream():
            await asyncio.sleep(behaviour.ttft_s)
            if "[[hang]]" in key:
                await asyncio.sleep(60)
            for i, word in enumerate(words):
                if i:
                    await asyncio.sleep(behaviour.itl_s)
                yield chunk(word if i == 0 else " " + word)
                if "[[cut]]" in key:
                    raise RuntimeError("injected connection drop")
            usage = {"prompt_tokens": 3, "completion_tokens": len(words),
                     "total_tokens": 3 + len(words)}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model"}
                                           for name in behaviour.models]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    return app


@contextmanager
def run_fake_server(behaviour: FakeBehaviour) -> Iterator[str]:
    """Serve the fake app on 127.0.0.1 in a background thread; yields its base URL."""
    with serve_in_thread(create_fake_app(behaviour), lifespan="off") as url:
        yield url
