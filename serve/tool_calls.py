"""Chat `tools` with `tool_choice` none, required or a named function, as vLLM serves them
without a model-specific parser: the call is forced by a JSON-schema structured output (the
same schemas as vLLM's `vllm.tool_parsers.utils.get_json_schema_from_tools`, pinned by a test),
and the constrained JSON is read back into OpenAI's `tool_calls`.

`tool_choice: "auto"` needs a parser that recognises the model's own tool-call syntax; this
server has none, so it is a 400 naming the field.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from serve.engine import StructuredOutput
from serve.errors import InvalidRequestError
from serve.protocol import ChatCompletionRequest, FunctionCall, NamedToolChoice, ToolCall
from serve.structured import check_json_schema

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolPlan:
    """How a chat request uses its tools: `mode` none (plain text), required (one or more
    calls, a JSON array) or named (one call of `name`, its arguments object)."""

    mode: Literal["none", "required", "named"]
    name: str | None = None
    constraint: StructuredOutput | None = None
    template_tools: list[dict[str, Any]] | None = None  # what the chat template is shown


def plan_tools(body: ChatCompletionRequest) -> ToolPlan:
    """The request's tool plan; 400 naming the field for auto, an unknown named function,
    duplicate names, or parameters that are not a JSON schema."""
    tools = body.tools or []
    choice = body.tool_choice
    if not tools:
        if choice not in (None, "none"):
            raise InvalidRequestError("'tool_choice' needs 'tools'", param="tool_choice",
                                      code="invalid_value")
        return ToolPlan("none")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.function.name in names:
            raise InvalidRequestError(f"'tools[{i}].function.name' repeats "
                                      f"'{tool.function.name}'", param=f"tools[{i}].function.name",
                                      code="invalid_value")
        names.add(tool.function.name)
        if tool.function.parameters is not None:
            check_json_schema(tool.function.parameters, f"tools[{i}].function.parameters")
    shown = [tool.model_dump(exclude_none=True) for tool in tools]
    if choice == "none":
        return ToolPlan("none", template_tools=shown)
    if choice is None or choice == "auto":
        raise InvalidRequestError(
            "'tool_choice' 'auto' (the default with 'tools') is not supported by this server: "
            "it needs a tool-call parser for the model, and this server has none. Use "
            "'required', 'none' or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            param="tool_choice", code="unsupported_parameter")
    if body.response_format is not None and body.response_format.type != "text" \
            or body.structured_outputs is not None:
        raise InvalidRequestError("A forced tool call cannot be combined with "
                                  "'response_format' or 'structured_outputs'",
                                  param="tool_choice", code="invalid_value")
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in names:
            raise InvalidRequestError(f"'tool_choice' names '{name}', which is not in 'tools'",
                                      param="tool_choice.function.name", code="invalid_value")
        i = next(i for i, t in enumerate(tools) if t.function.name == name)
        params = tools[i].function.parameters or EMPTY_PARAMETERS
        return ToolPlan("named", name, StructuredOutput(
            "json", params, f"tools[{i}].function.parameters"), shown)
    return ToolPlan("required", None, StructuredOutput(
        "json", required_schema(body), "tools"), shown)


def required_schema(body: ChatCompletionRequest) -> dict[str, Any]:
    """vLLM's schema for `tool_choice: "required"`: a non-empty array of
    {"name": one of the tools, "parameters": its arguments}."""
    variants = [{"properties": {"name": {"type": "string", "enum": [t.function.name]},
                                "parameters": t.function.parameters or EMPTY_PARAMETERS},
                 "required": ["name", "parameters"]} for t in body.tools or []]
    schema: dict[str, Any] = {"type": "array", "minItems": 1,
                              "items": {"type": "object", "anyOf": variants}}
    if body.parallel_tool_calls is False:
        schema["maxItems"] = 1
    return schema


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_calls_of(plan: ToolPlan, text: str) -> list[ToolCall] | None:
    """The calls in a constrained output, or None when the text is not a complete call
    (the output was cut by max_tokens: the client gets the text instead)."""
    if plan.mode == "none":
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if plan.mode == "named":
        if not isinstance(value, dict):
            return None
        return [ToolCall(id=new_call_id(), function=FunctionCall(name=plan.name or "",
                                                                 arguments=text.strip()))]
    if not isinstance(value, list) or not all(isinstance(c, dict) and "name" in c
                                              for c in value):
        return None
    return [ToolCall(id=new_call_id(), function=FunctionCall(
        name=str(c["name"]), arguments=json.dumps(c.get("parameters", {}), ensure_ascii=False)))
        for c in value]


def finish_reason_of(plan: ToolPlan, calls: list[ToolCall] | None, reason: str | None) -> Any:
    """OpenAI's finish reason: "tool_calls" when the model chose to call (required); a forced
    named call ends with "stop", as OpenAI answers it."""
    if calls and plan.mode == "required":
        return "tool_calls"
    return reason
