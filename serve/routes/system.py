"""Operational endpoints, open without an API key: /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from serve.deps import StateDep
from serve.metrics import CONTENT_TYPE
from serve.protocol import StatusResponse

router = APIRouter(tags=["system"])


@router.get("/health", response_model=StatusResponse)
async def health() -> StatusResponse:
    """The process is up and answering (says nothing about the engine)."""
    return StatusResponse(status="ok")


@router.get("/ready", response_model=StatusResponse, responses={
    503: {"model": StatusResponse, "description": "The engine is loading, or the server is "
                                                  "draining for shutdown."}})
async def ready(state: StateDep) -> Response:
    """200 once the engine is loaded, 503 before that and while draining for shutdown."""
    if state.ready:
        return JSONResponse({"status": "ready"})
    reason = "draining" if state.admission.draining else "loading"
    return JSONResponse({"status": reason}, status_code=503)


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"description": "Prometheus text exposition format (docs/SERVING.md lists the "
                         "metrics)."}})
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
