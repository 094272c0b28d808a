"""FastAPI dependencies: the server state, the engine, and the API-key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from serve.admission import Admission
from serve.engine import Engine
from serve.errors import AuthenticationError, ServiceUnavailableError
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


def require_api_key(request: Request, state: StateDep) -> None:
    """401 unless the request carries `Authorization: Bearer <api key>` (when a key is set)."""
    expected = state.settings.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # compare_digest on bytes: constant time whatever the token, so it leaks nothing.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                             expected.encode()):
        raise AuthenticationError(
            "Missing or invalid API key: send 'Authorization: Bearer <key>'",
            code="invalid_api_key")
