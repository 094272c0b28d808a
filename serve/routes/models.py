"""GET /v1/models: every served model, adapters naming their base as `parent`."""

from __future__ import annotations

from fastapi import APIRouter

from serve.deps import EngineDep
from serve.openapi import error_responses
from serve.protocol import ModelList, ModelObject

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=error_responses(500, 503))
async def list_models(engine: EngineDep) -> ModelList:
    data = [ModelObject(id=card.name, created=card.created, root=card.parent or card.name,
                        parent=card.parent, max_model_len=card.max_model_len)
            for card in engine.models()]
    return ModelList(data=data)
