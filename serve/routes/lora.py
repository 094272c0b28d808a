"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: vLLM's routes for adding and removing
LoRA adapters while the server runs (behind the API key like every /v1/ route).

Bodies and success answers are vLLM's (a plain-text "Success: ..." line); errors are the
OpenAI error body naming the field. Adapters attach to the primary model (`--model`), whose
engine must have been started with LoRA support (`--enable-lora`, or any `--lora`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from serve.deps import EngineDep, StateDep
from serve.errors import InvalidRequestError
from serve.lora_folder import check_adapter_folder
from serve.openapi import ERROR_DESCRIPTIONS
from serve.protocol import ErrorResponse, LoadLoraAdapterRequest, UnloadLoraAdapterRequest
from serve.settings import ServeSettings

router = APIRouter(tags=["lora"])

_SUCCESS: dict[int | str, dict[str, Any]] = {
    200: {"description": "vLLM's plain-text confirmation, e.g. `Success: LoRA adapter 'x' "
                         "added successfully.`",
          "content": {"text/plain": {"schema": {"type": "string"}}}}}
_NOT_ENABLED = ("LoRA adapters cannot be loaded or unloaded: the server was started without "
                "LoRA support (start it with --enable-lora, or with an adapter via --lora)")
_LOAD_400 = ("Invalid request: a missing or malformed field, LoRA not enabled on the server "
             "(`code`: lora_not_enabled), a `lora_path` that is not a PEFT LoRA folder on the "
             "server or does not fit the base model (invalid_lora_adapter), or a `lora_name` "
             "already served (lora_name_taken). `param` names the field.")
_UNLOAD_400 = ("Invalid request: a missing or malformed field, or LoRA not enabled on the "
               "server (`code`: lora_not_enabled).")
_UNLOAD_404 = "No adapter of that name is loaded (`code`: lora_not_found)."


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """Error entries with the JSON error body spelled out: with a plain-text route,
    FastAPI would document a `model=` entry as text/plain."""
    ref = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    return {code: {"description": text, "content": {"application/json": {"schema": ref}}}
            for code, text in descriptions.items()}


def _lora_base(settings: ServeSettings) -> str:
    """The base model runtime adapters attach to, or a 400 naming the flag that enables them."""
    base = settings.runtime_lora_base
    if base is None:
        raise InvalidRequestError(_NOT_ENABLED, param="lora_name", code="lora_not_enabled")
    return base


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses={
    **_SUCCESS, **_errors({400: _LOAD_400, 500: ERROR_DESCRIPTIONS[500],
                           503: ERROR_DESCRIPTIONS[503]})})
async def load_lora_adapter(body: LoadLoraAdapterRequest, state: StateDep,
                            engine: EngineDep) -> PlainTextResponse:
    """Load a PEFT LoRA adapter folder from the server's disk and serve it as `lora_name`: it
    shows in /v1/models and is used with `"model": lora_name` until unloaded."""
    base = _lora_base(state.settings)
    path = check_adapter_folder(body.lora_path, max_rank=state.settings.max_lora_rank)
    await engine.load_lora(body.lora_name, str(path), base=base, replace=body.load_inplace)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse, responses={
    **_SUCCESS, **_errors({400: _UNLOAD_400, 404: _UNLOAD_404, 500: ERROR_DESCRIPTIONS[500],
                           503: ERROR_DESCRIPTIONS[503]})})
async def unload_lora_adapter(body: UnloadLoraAdapterRequest, state: StateDep,
                              engine: EngineDep) -> PlainTextResponse:
    """Stop serving adapter `lora_name` (one loaded at start-up or at run time): requests
    naming it then get 404; those already running finish."""
    _lora_base(state.settings)
    await engine.unload_lora(body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed "
                             "successfully.")
