"""GET /v1/models: every served model, adapters naming their base as `parent`."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serve.deps import EngineDep, require_api_key
from serve.protocol import ModelList, ModelObject

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/v1/models", response_model=ModelList)
async def list_models(engine: EngineDep) -> ModelList:
    data = [ModelObject(id=card.name, created=card.created, root=card.parent or card.name,
                        parent=card.parent, max_model_len=card.max_model_len)
            for card in engine.models()]
    return ModelList(data=data)
