"""What /openapi.json says each route can answer: every status code, with its body.

Routes declare their error statuses with `error_responses(...)`; `install_openapi` then fixes
what FastAPI's generator gets wrong for this server: it documents a 422 for every route with a
body, but validation errors here are 400s (`serve.errors`), and it knows nothing of the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serve.auth import is_protected
from serve.protocol import ErrorResponse

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: not a JSON object, a missing, mistyped or out-of-range value, an "
         "unknown or unsupported field, or a prompt too long for the model. `param` names "
         "the field, `code` the problem.",
    401: "Missing or wrong API key (`code`: invalid_api_key).",
    404: "No such model (`code`: model_not_found; the message lists the served models).",
    429: "More generation requests in flight than --max-in-flight (`code`: too_many_requests).",
    500: "The engine failed (`code`: internal_error). Inside a started stream this arrives as "
         "an `error` event instead.",
    503: "The engine is loading, the server is draining for shutdown, or the engine died "
         "(`code`: engine_not_ready, shutting_down, aborted, engine_unavailable).",
}

# nginx's "client closed request": the status of a request whose client hung up first. No
# client ever receives it; it shows in the logs and in jaxtune_http_requests_total.
CLIENT_CLOSED_RESPONSE: dict[int | str, dict[str, Any]] = {
    499: {"description": "The client disconnected before the answer; never received, only "
                         "counted in the metrics."}}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for `codes`, each with the OpenAI error body."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]}
            for code in codes}


# The generation routes: JSON, or Server-Sent Events with `"stream": true`.
GENERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The completion; with `\"stream\": true`, Server-Sent Events of "
                         "chunks ending with `data: [DONE]`.",
          "content": {"text/event-stream": {"schema": {
              # OpenAPI 3.1 reads an event stream's schema as the schema of each event.
              "type": "object", "required": ["data"],
              "properties": {"data": {"type": "string", "description": "a chunk object as "
                                      "JSON, an error object as JSON, or `[DONE]`"},
                             "event": {"type": "string"}}}}}},
    **error_responses(400, 404, 429, 500, 503),
    **CLIENT_CLOSED_RESPONSE,
}


def install_openapi(app: FastAPI, *, model_names: Sequence[str] | None, api_key: bool) -> None:
    """Serve a corrected schema at /openapi.json (built once, on first request): the served
    `model_names` as the values `model` takes (None: any name, as when LoRA adapters can be
    loaded at run time), and the bearer key when `api_key`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes,
                               description=app.description)
            _drop_validation_422(spec)
            if model_names is not None:
                _list_served_models(spec, model_names)
            if api_key:
                _declare_bearer_auth(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(spec: dict[str, Any]):
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            yield path, operation


def _drop_validation_422(spec: dict[str, Any]) -> None:
    for _, operation in _operations(spec):
        operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _list_served_models(spec: dict[str, Any], names: Sequence[str]) -> None:
    """Every request's `model` is one of the names this server was started with (any other
    name is a 404, as the schema's 404 says)."""
    for schema in spec.get("components", {}).get("schemas", {}).values():
        model = schema.get("properties", {}).get("model")
        if model is not None and model.get("type") == "string" and "model" in schema.get(
                "required", ()):
            model["enum"] = list(names)


def _declare_bearer_auth(spec: dict[str, Any]) -> None:
    """`Authorization: Bearer KEY` on every protected route, each also answering 401."""
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http", "scheme": "bearer", "description": "the server's --api-key"}
    ref = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    for path, operation in _operations(spec):
        if is_protected(path):
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = {
                "description": ERROR_DESCRIPTIONS[401],
                "content": {"application/json": {"schema": ref}}}
