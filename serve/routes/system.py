"""Operational endpoints, open without an API key: /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serve.deps import StateDep
from serve.metrics import CONTENT_TYPE

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and answering (says nothing about the engine)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: StateDep) -> Response:
    """200 once the engine is loaded, 503 before that and while draining for shutdown."""
    if state.ready:
        return JSONResponse({"status": "ready"})
    reason = "draining" if state.admission.draining else "loading"
    return JSONResponse({"status": reason}, status_code=503)


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
