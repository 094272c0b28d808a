"""The FastAPI app factory. Nothing is built at import time: `create_app` wires routers,
middleware and exception handlers; the lifespan builds the engine and tears it down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.admission import Admission
from serve.auth import ApiKeyMiddleware
from serve.deps import ServerState
from serve.engine import Engine
from serve.errors import install_exception_handlers
from serve.metrics import ServerMetrics
from serve.openapi import install_openapi
from serve.protocol import new_id
from serve.routes import chat, completions, lora, models, system, tokenize
from serve.settings import ServeSettings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[ServeSettings], Awaitable[Engine]]


async def start_vllm_engine(settings: ServeSettings) -> Engine:
    """The production engine factory (imports vLLM only now)."""
    from serve.vllm_engine import VllmEngine

    return await VllmEngine.start(settings)


def create_app(settings: ServeSettings, engine_factory: EngineFactory | None = None) -> FastAPI:
    """The OpenAI-compatible app for `settings`; `engine_factory` defaults to vLLM."""
    factory = engine_factory or start_vllm_engine
    metrics = ServerMetrics()
    state = ServerState(settings=settings, metrics=metrics,
                        admission=Admission(settings.max_in_flight, metrics.in_flight))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = await factory(settings)
        state.engine = engine
        metrics.watch_engine(engine.load)
        logger.info("serving %s", ", ".join(card.name for card in engine.models()))
        try:
            yield
        finally:
            await _shutdown(state, engine)

    app = FastAPI(title="jaxtune serve", version=version("jaxtune"), lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.server = state
    install_exception_handlers(app)
    # Adapters loaded at run time are servable too: then no fixed list of names is stated.
    runtime_lora = settings.runtime_lora_base is not None
    install_openapi(app, model_names=None if runtime_lora else settings.model_names(),
                    api_key=settings.api_key is not None)
    for router in (system.router, models.router, completions.router, chat.router,
                   tokenize.router, lora.router):
        app.include_router(router)
    # Added last = outermost: every request is counted, including those auth turns away.
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    known_paths = frozenset(getattr(route, "path", "") for route in app.routes)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, known_paths=known_paths)
    return app


async def _shutdown(state: ServerState, engine: Engine) -> None:
    """Drain in-flight requests for up to `drain_timeout_s`, abort the rest, stop the engine."""
    drained = await state.admission.drain(state.settings.drain_timeout_s)
    if not drained:
        leftover = state.admission.running_engine_ids()
        logger.warning("aborting %d engine requests still running after %.0f s of draining",
                       len(leftover), state.settings.drain_timeout_s)
        for request_id in leftover:
            await engine.abort(request_id)
    await engine.close()
    state.metrics.watch_engine(None)
    logger.info("engine stopped")


class RequestMetricsMiddleware:
    """Gives each request an id (or keeps the client's `X-Request-Id`) and counts it by route
    and final status. Plain ASGI, so streaming responses and disconnects pass untouched."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, known_paths: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:128]
        scope.setdefault("state", {})["request_id"] = given or new_id("req")
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or scope["path"]
            if endpoint not in self.known_paths:
                endpoint = "unmatched"  # bounded label values, whatever clients request
            self.metrics.http_requests.labels(endpoint, str(status)).inc()
