"""Pydantic models of the OpenAI-compatible request and response bodies we serve.

Requests are validated strictly (a string where a number belongs is a 400, not a coercion)
and fail closed: each body first goes through the field table of `serve.request_fields`, so a
field the server does not act on is a 400 naming it, never ignored. Range checks that depend on
the served model (context length, `n` cap, token ids) happen in the handlers.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from serve.engine import FinishReason
from serve.request_fields import Scope, refused_schema, screen_fields, unsupported_field


def new_id(prefix: str) -> str:
    """An OpenAI-style object id such as ``cmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def _integral(value: Any) -> Any:
    """JSON has one number type: ``5.0`` is the integer 5 (as JSON Schema reads it), ``5.5`` is
    not an integer, and ``"5"`` is not a number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _int64(value: int) -> int:
    if not -(2**63) <= value < 2**63:
        raise ValueError("must be a signed 64-bit integer")
    return value


JsonInt = Annotated[int, BeforeValidator(_integral)]
# Bounds go before the validator, or pydantic cannot state them in the JSON schema.
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
# OpenAPI's int64 format states the bounds exactly; `maximum: 2**63 - 1` would reach clients as
# the float 2**63 (FastAPI's schema model stores bounds as floats).
Int64 = Annotated[JsonInt, AfterValidator(_int64),
                  WithJsonSchema({"type": "integer", "format": "int64"})]


def _schema_extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Document the refused fields of the model's scope, and rules across fields."""
    scope = getattr(cls, "field_scope", None)
    if scope is not None:
        schema.setdefault("properties", {}).update(refused_schema(scope))
    if "stream_options" in schema.get("properties", {}):
        schema["if"] = {"required": ["stream_options"],
                        "properties": {"stream_options": {"type": "object"}}}
        schema["then"] = {"required": ["stream"], "properties": {"stream": {"const": True}}}


class _Request(BaseModel):
    """A request object: strict types, and no field outside the table of its `field_scope`."""

    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra=_schema_extra)
    field_scope: ClassVar[Scope | None] = None

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: Any) -> Any:
        if cls.field_scope is None or not isinstance(data, dict):
            return data
        return screen_fields(data, cls.field_scope)


class StreamOptions(_Request):
    field_scope: ClassVar[Scope] = "stream_options"

    include_usage: bool = False


MAX_STOP_SEQUENCES = 16  # as `serve.sampling` checks
StopString = Annotated[str, Field(min_length=1)]
StopList = Annotated[list[StopString], Field(max_length=MAX_STOP_SEQUENCES)]


class SamplingFields(_Request):
    """Fields shared by completions and chat completions."""

    model: str
    max_tokens: PositiveInt | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: PositiveInt | None = None
    seed: Int64 | None = None
    stop: StopString | StopList | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    user: str | None = None
    # vLLM extensions: keep generating past the end-of-sequence token (load tests,
    # benchmarks); add the tokenizer's special tokens (None: the endpoint's default).
    ignore_eos: bool | None = False
    add_special_tokens: bool | None = None

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


TokenIds = list[Annotated[int, Field(ge=0), BeforeValidator(_integral)]]
T = TypeVar("T")
NonEmpty = Annotated[T, Field(min_length=1)]


class CompletionRequest(SamplingFields):
    """POST /v1/completions. `prompt`: text, token ids, or a batch of either."""

    field_scope: ClassVar[Scope] = "completions"

    prompt: str | NonEmpty[list[str]] | NonEmpty[TokenIds] | NonEmpty[list[NonEmpty[TokenIds]]]


class TextPart(_Request):
    type: Literal["text"]
    text: str

    @model_validator(mode="before")
    @classmethod
    def _only_text(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, dict) else None
        if isinstance(kind, str) and kind != "text":
            raise unsupported_field("type", f"is {kind!r}: only 'text' content parts are "
                                            "supported")
        return data


class ChatMessage(_Request):
    field_scope: ClassVar[Scope] = "message"

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        """The message as the chat template receives it."""
        out = {"role": self.role, "content": self.text()}
        if self.name is not None:
            out["name"] = self.name
        return out


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    field_scope: ClassVar[Scope] = "chat"

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None \
            else self.max_tokens


# ---- responses -------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "jaxtune"
    root: str
    parent: str | None = None
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class StatusResponse(BaseModel):
    """/health and /ready: ``ok``, ``ready``, ``loading`` or ``draining``."""

    status: Literal["ok", "ready", "loading", "draining"]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo
