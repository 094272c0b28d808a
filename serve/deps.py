"""FastAPI dependencies: the server state and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve.admission import Admission
from serve.engine import Engine
from serve.errors import ServiceUnavailableError
from serve.metrics import ServerMetrics
from serve.settings import ServeSettings


@dataclass
class ServerState:
    """Everything the routes share; lives on `app.state.server`."""

    settings: ServeSettings
    metrics: ServerMetrics
    admission: Admission
    engine: Engine | None = None

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.admission.draining


def get_state(request: Request) -> ServerState:
    return request.app.state.server


StateDep = Annotated[ServerState, Depends(get_state)]


def get_engine(state: StateDep) -> Engine:
    if state.engine is None:
        raise ServiceUnavailableError("The engine is not loaded yet", code="engine_not_ready")
    return state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]
