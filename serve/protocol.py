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
from serve.settings import MODEL_NAME_PATTERN


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


# vLLM's default `max_logprobs`: the most candidates a request may ask for per position.
MAX_LOGPROBS = 20
LogprobCount = Annotated[int, Field(ge=0, le=MAX_LOGPROBS), BeforeValidator(_integral)]
JsonObject = dict[str, Any]


class TextFormat(_Request):
    type: Literal["text"]


class JsonObjectFormat(_Request):
    type: Literal["json_object"]


class JsonSchemaSpec(_Request):
    """OpenAI's `response_format.json_schema`: the schema the output must validate against."""

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: JsonObject = Field(alias="schema")
    # The output follows the schema whatever `strict` says: constrained decoding is exact.
    strict: bool | None = None


class JsonSchemaFormat(_Request):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat,
                           Field(discriminator="type")]


class StructuredOutputs(_Request):
    """vLLM's `structured_outputs`: exactly one constraint, decoded by vLLM's backend."""

    field_scope: ClassVar[Scope] = "structured_outputs"

    # Aliased: a field named `json` would shadow pydantic's `BaseModel.json`.
    json_: JsonObject | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: NonEmpty[list[str]] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def given(self) -> dict[str, Any]:
        """The constraints set, by their request names."""
        return self.model_dump(by_alias=True, exclude_none=True)


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
    prompt_logprobs: LogprobCount | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None

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
    # 0 only with `echo` (score the prompt, generate nothing), as vLLM allows.
    max_tokens: Annotated[int, Field(ge=0), BeforeValidator(_integral)] | None = None
    echo: bool | None = False
    logprobs: LogprobCount | None = None


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


class FunctionDefinition(_Request):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class ChatTool(_Request):
    """A function the model may call; `parameters` is a JSON schema of its arguments."""

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    field_scope: ClassVar[Scope] = "chat"

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: PositiveInt | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    logprobs: bool | None = False
    top_logprobs: LogprobCount | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None \
            else self.max_tokens


class TokenizeRequest(_Request):
    """POST /tokenize (vLLM's): `prompt` text, or chat `messages` rendered with the model's
    chat template (opening the assistant turn, as generation does)."""

    model: str
    prompt: str | None = None
    messages: NonEmpty[list[ChatMessage]] | None = None
    # Default as generation: true for a prompt, false for messages (the template places them).
    add_special_tokens: bool | None = None

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' and 'messages'")
        return self


class DetokenizeRequest(_Request):
    """POST /detokenize (vLLM's): the text of `tokens`."""

    model: str
    tokens: TokenIds


class LoadLoraAdapterRequest(_Request):
    """POST /v1/load_lora_adapter (vLLM's body): serve the PEFT adapter folder `lora_path` (on
    the server's disk) as model `lora_name`; `load_inplace` replaces the weights of an adapter
    already loaded under that name."""

    lora_name: str = Field(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN)
    lora_path: str = Field(min_length=1, max_length=4096)
    load_inplace: bool = False


class UnloadLoraAdapterRequest(_Request):
    """POST /v1/unload_lora_adapter (vLLM's body): stop serving adapter `lora_name`."""

    lora_name: str = Field(min_length=1, max_length=256)


# ---- responses -------------------------------------------------------------------------------


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(BaseModel):
    prompt: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions logprobs: one entry per token of `text`."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class PromptLogprob(BaseModel):
    """vLLM's `prompt_logprobs` entry: one candidate token at one prompt position."""

    logprob: float
    rank: int | None
    decoded_token: str


# vLLM's shape: per prompt position (the first is null), {token id: entry}.
PromptLogprobs = list[dict[str, PromptLogprob] | None]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | Literal["tool_calls"] | None
    prompt_logprobs: PromptLogprobs | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprobEntry(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatLogprobEntry(TopLogprobEntry):
    top_logprobs: list[TopLogprobEntry]


class ChatLogprobs(BaseModel):
    """OpenAI's chat logprobs: one entry per generated token."""

    content: list[ChatLogprobEntry] | None


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | Literal["tool_calls"] | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_logprobs: PromptLogprobs | None = None


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None  # a piece of the arguments' JSON text


class DeltaToolCall(BaseModel):
    """A streamed piece of call `index`: `id`, `type` and the function's name come with its
    first piece, the arguments in one or more pieces."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | Literal["tool_calls"] | None = None


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
