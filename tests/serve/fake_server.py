"""Helpers for route tests: an app on the fake engine, and a real uvicorn server around it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from infra.pipeline.server_process import free_port
from serve.app import create_app
from serve.engine import ModelCard
from serve.fake_engine import FakeEngine
from serve.settings import ModelSource, ServeSettings

# uvicorn's default logging set-up (dictConfig) closes every handler configured before it,
# pytest's capture handlers included, which broke the logging of every later test in the process.
LOG_CONFIG = None
FAKE_MODEL = "fake"
CONTEXT = 64
VOCAB = 1000


def fake_settings(**overrides) -> ServeSettings:
    fields = {"models": (ModelSource(FAKE_MODEL, Path("/nonexistent/fake")),)}
    fields.update(overrides)
    return ServeSettings(**fields)


def fake_engine(**kwargs) -> FakeEngine:
    return FakeEngine((ModelCard(FAKE_MODEL, max_model_len=CONTEXT, vocab_size=VOCAB),),
                      **kwargs)


def fake_app(engine: FakeEngine | None = None, **overrides) -> tuple[FastAPI, FakeEngine]:
    """An app serving `engine` (default: one fake model, context 64, vocab 1000)."""
    engine = engine or fake_engine()

    async def factory(_settings: ServeSettings) -> FakeEngine:
        return engine

    return create_app(fake_settings(**overrides), factory), engine


@contextlib.asynccontextmanager
async def running_server(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port in this event loop; yield its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           log_config=LOG_CONFIG, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=15)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, *, lifespan: str = "auto") -> Iterator[str]:
    """Serve `app` on a free loopback port from a background thread; yield its base URL.

    For tests whose client blocks (a subprocess, a synchronous CLI) so the server cannot share
    the test's event loop.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan,
                                           log_config=LOG_CONFIG))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
