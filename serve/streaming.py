"""Server-Sent Events responses and client-disconnect handling.

A client that goes away must stop its engine work: streaming responses are cancelled by
Starlette when the connection drops (the generators then abort their engine requests), and
non-streaming handlers race their work against the disconnect message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
from fastapi import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

T = TypeVar("T")

DONE = "data: [DONE]\n\n"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "client went away before the answer"


def sse(payload_json: str) -> str:
    return f"data: {payload_json}\n\n"


class SSEResponse(StreamingResponse):
    """`text/event-stream` response that always closes its body iterator.

    Starlette cancels the stream when the client disconnects; closing the iterator in every
    case (also when sending fails) guarantees the generator's cleanup (engine abort) runs now,
    not whenever the garbage collector finalises it.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], *,
                 on_close: Callable[[], Awaitable[None]] | None = None, **kwargs: Any):
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                   **kwargs.pop("headers", {})}
        super().__init__(content, headers=headers, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                # A stream cancelled before its first chunk never ran its generator's cleanup.
                if self._on_close is not None:
                    await self._on_close()


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; if the client disconnects first, cancel it and raise `ClientDisconnected`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientDisconnected


def client_closed_response() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)
