"""API errors and the ONE place that turns exceptions into OpenAI-style error responses.

Every error body is ``{"error": {"message", "type", "param", "code"}}``. Invalid requests are
4xx; only a genuine server fault is a 500, and even then the body has the same shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.engine import (
    ChatTemplateMissingError,
    ChatTemplateRenderError,
    EngineError,
    EngineUnavailableError,
    InvalidGenerationError,
    LoraAdapterError,
    UnknownLoraError,
    UnknownModelError,
)
from serve.protocol import ErrorInfo, ErrorResponse
from serve.request_fields import UNKNOWN_PARAMETER, UNSUPPORTED_PARAMETER

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status and an OpenAI error type/code."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code

    def body(self) -> dict[str, Any]:
        info = ErrorInfo(message=self.message, type=self.error_type, param=self.param,
                         code=self.code)
        return ErrorResponse(error=info).model_dump()


class InvalidRequestError(APIError):
    """400: the request is well-formed JSON but asks for something we cannot do."""


class ModelNotFoundError(APIError):
    status_code = 404
    error_type = "not_found_error"


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"


class TooManyRequestsError(APIError):
    status_code = 429
    error_type = "rate_limit_error"


class ServiceUnavailableError(APIError):
    status_code = 503
    error_type = "service_unavailable"


def error_response(exc: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=exc.body(), headers=headers)


def error_chunk(exc: APIError) -> str:
    """An SSE `data:` line carrying an error, for failures after a stream has started."""
    return f"data: {json.dumps(exc.body())}\n\n"


def from_engine_error(exc: Exception) -> APIError | None:
    """The API error for an engine exception the client caused, or None for a server fault."""
    if isinstance(exc, UnknownModelError):
        return ModelNotFoundError(str(exc), param="model", code="model_not_found")
    if isinstance(exc, ChatTemplateMissingError):
        return InvalidRequestError(str(exc), param="messages", code="chat_template_missing")
    if isinstance(exc, ChatTemplateRenderError):
        return InvalidRequestError(str(exc), param="messages", code="chat_template_error")
    if isinstance(exc, InvalidGenerationError):
        param = exc.param
        prefix = f"'{param}': " if param else ""
        return InvalidRequestError(f"{prefix}{exc}", param=param, code="invalid_value")
    if isinstance(exc, UnknownLoraError):
        return ModelNotFoundError(str(exc), param=exc.param, code=exc.code)
    if isinstance(exc, LoraAdapterError):
        return InvalidRequestError(f"'{exc.param}': {exc}", param=exc.param, code=exc.code)
    if isinstance(exc, EngineUnavailableError):
        return ServiceUnavailableError(str(exc), code="engine_unavailable")
    return None


def internal_error(exc: BaseException) -> APIError:
    """A 500 body that names the exception type but leaks no internals."""
    err = APIError(f"Internal server error: {type(exc).__name__}", code="internal_error")
    err.status_code, err.error_type = 500, "server_error"
    return err


def stream_error(exc: Exception) -> APIError:
    """The error to send inside an already-started stream (logged when it is our fault)."""
    if isinstance(exc, APIError):
        return exc
    mapped = from_engine_error(exc)
    if mapped is None:
        logger.error("stream failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return internal_error(exc)
    return mapped


def _param_of(loc: tuple[Any, ...]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``"messages[0].role"``."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for i, part in enumerate(parts):
        if i and parts[i - 1] == "response_format" and isinstance(part, str):
            continue  # the tag of the `response_format` union ("json_schema"), not a field
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[str]", "list[int]", "list[list[int]]", "int", "float",
                      "bool") or "[" in str(part) or "function-" in str(part) \
                or str(part).startswith("constrained-"):
            # pydantic names union branches in `loc`; they say nothing to an API user.
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or None


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    """Turn FastAPI's validation error into one readable 400 (first problem first; a field
    outside the table of `serve.request_fields` comes before any other problem)."""
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("Invalid request body", code="invalid_body")
    first = _most_telling(errors)
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error", "")
        return InvalidRequestError(f"Request body is not valid JSON: {detail}".rstrip(": "),
                                   code="invalid_json")
    loc = tuple(first.get("loc", ()))
    if loc == ("body",) and first.get("type") in ("missing", "model_attributes_type",
                                                  "dict_type"):
        return InvalidRequestError("Request body must be a JSON object", code="invalid_body")
    if first.get("type") in _FIELD_ERRORS:
        return _field_error(first, loc)
    param = _param_of(loc)
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    prefix = f"'{param}': " if param else ""
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    return InvalidRequestError(f"{prefix}{message}{more}", param=param, code=code)


def _most_telling(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The error to report: a field the server does not take first; else, when the first
    problem is a value matching no branch of a union (``prompt: []``), the error of the branch
    whose type matched ("at least 1 item") rather than "should be a valid string"."""
    first = next((e for e in errors if e.get("type") in _FIELD_ERRORS), errors[0])
    if first.get("type") in _FIELD_ERRORS or not str(first.get("type")).endswith("_type"):
        return first
    field = tuple(first.get("loc", ()))[:2]  # ("body", name)
    return next((e for e in errors if tuple(e.get("loc", ()))[:2] == field
                 and not str(e.get("type")).endswith("_type")), first)


# Pydantic error types of fields the server does not take (`serve.request_fields`);
# "extra_forbidden" comes from nested objects without a field table (content parts).
_FIELD_ERRORS = (UNKNOWN_PARAMETER, UNSUPPORTED_PARAMETER, "extra_forbidden")


def _field_error(error: Any, loc: tuple[Any, ...]) -> InvalidRequestError:
    """The 400 naming an unknown or unsupported field (``stream_options.foo`` when nested)."""
    kind = error["type"]
    if kind == "extra_forbidden":
        names, parent, kind = [_param_of(loc)], None, UNKNOWN_PARAMETER
    else:
        names, parent = error["ctx"]["fields"], _param_of(loc)
    names = [f"{parent}.{name}" if parent else str(name) for name in names]
    if kind == UNKNOWN_PARAMETER:
        plural = "s" if len(names) > 1 else ""
        message = f"Unrecognized request argument{plural} supplied: {', '.join(names)}"
    else:
        message = f"'{names[0]}' {error['ctx']['detail']}"
    return InvalidRequestError(message, param=names[0], code=kind)


def install_exception_handlers(app: FastAPI) -> None:
    """Register every exception -> response mapping of the app (and nowhere else)."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        _log_rejection(request, exc.status_code, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return error_response(exc, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        _log_rejection(request, err.status_code, err.message)
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        err = APIError(str(exc.detail), code=str(exc.status_code))
        err.status_code, err.error_type = exc.status_code, kind
        return error_response(err, getattr(exc, "headers", None))

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        mapped = from_engine_error(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        _log_rejection(request, mapped.status_code, mapped.message)
        return error_response(mapped)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(internal_error(exc))


def _log_rejection(request: Request, status: int, message: str) -> None:
    request_id = getattr(request.state, "request_id", "-")
    logger.info("%s %s %s status=%d error=%r", request_id, request.method, request.url.path,
                status, message)
