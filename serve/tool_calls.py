"""Chat `tools` and `tool_choice`.

none, required or a named function work as vLLM serves them without a model-specific parser:
the call is forced by a JSON-schema structured output (the same schemas as vLLM's
`vllm.tool_parsers.utils.get_json_schema_from_tools`, pinned by a test), and the constrained
JSON is read back into OpenAI's `tool_calls`.

`auto` (the default with `tools`) lets the model answer in text or call tools in its own
syntax, which only a parser for that model family can read: the engine's tool-call parser
(`jaxtune serve --tool-call-parser NAME`, vLLM's parsers, see `serve.vllm_tools`) reads each
output back into content and calls (`ParsedOutput`, `ParsedDelta`), shaped here into OpenAI's
message and stream deltas. Without the flag `auto` is a 400 naming the field.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from serve.engine import ParsedDelta, ParsedOutput, StructuredOutput, ToolCallParser
from serve.errors import InvalidRequestError
from serve.generation import ChoiceDelta
from serve.protocol import (
    AssistantMessage,
    ChatCompletionRequest,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
)
from serve.structured import check_json_schema

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolPlan:
    """How a chat request uses its tools: `mode` none (plain text), required (one or more
    calls, a JSON array), named (one call of `name`, its arguments object) or auto (text or
    calls in the model's own syntax, read by the engine's tool-call parser)."""

    mode: Literal["none", "required", "named", "auto"]
    name: str | None = None
    constraint: StructuredOutput | None = None
    template_tools: list[dict[str, Any]] | None = None  # what the chat template is shown


def plan_tools(body: ChatCompletionRequest, tool_call_parser: str | None) -> ToolPlan:
    """The request's tool plan; 400 naming the field for auto without a `tool_call_parser`
    (the server's --tool-call-parser), an unknown named function, duplicate names, or
    parameters that are not a JSON schema."""
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
        if tool_call_parser is None:
            raise InvalidRequestError(
                "'tool_choice' 'auto' (the default with 'tools') needs a tool-call parser for "
                "the model's own tool-call syntax, and this server was started without one "
                "(jaxtune serve --tool-call-parser NAME). Use 'required', 'none' or "
                "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                param="tool_choice", code="unsupported_parameter")
        return ToolPlan("auto", template_tools=shown)
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


def whole_call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Stream deltas that carry each of `calls` whole."""
    return [DeltaToolCall(index=k, id=call.id, type="function", function=DeltaFunctionCall(
        name=call.function.name, arguments=call.function.arguments)).model_dump()
        for k, call in enumerate(calls)]


def auto_calls(parsed: ParsedOutput, parallel_tool_calls: bool | None) -> list[ToolCall] | None:
    """The calls a parser found in a whole `auto` output (only the first with
    `parallel_tool_calls: false`, as vLLM filters them), or None."""
    calls = [ToolCall(id=c.id or new_call_id(),
                      function=FunctionCall(name=c.name, arguments=c.arguments))
             for c in parsed.calls]
    if parallel_tool_calls is False:
        calls = calls[:1]
    return calls or None


def auto_delta(parsed: ParsedDelta | None, parallel_tool_calls: bool | None) -> dict[str, Any]:
    """OpenAI's stream delta for what a parser made of one streamed piece of an `auto` output
    ({}: nothing to send)."""
    if parsed is None:
        return {}
    out: dict[str, Any] = {"content": parsed.content} if parsed.content else {}
    calls = [DeltaToolCall(index=c.index, id=c.id, type="function" if c.id else None,
                           function=None if c.name is None and c.arguments is None else
                           DeltaFunctionCall(name=c.name, arguments=c.arguments))
             for c in parsed.calls if parallel_tool_calls is not False or c.index == 0]
    if calls:
        out["tool_calls"] = [call.model_dump(exclude_none=True) for call in calls]
    return out


class ToolReader:
    """Reads each choice's output back as the request's tool plan says: plain text, a forced
    call's JSON, or (auto) whatever the engine's tool-call parser finds, one parser per choice.
    Streamed, a forced call is sent whole once its JSON is complete; auto streams as the
    parser reads (vLLM's `parse_delta`)."""

    def __init__(self, plan: ToolPlan, parsers: list[ToolCallParser] | None,
                 parallel_tool_calls: bool | None):
        self.plan, self.parsers, self.parallel = plan, parsers, parallel_tool_calls
        self._held: dict[int, list[str]] = {}  # forced calls: the text so far
        self._called: set[int] = set()  # auto: choices that streamed a call

    def message(self, i: int, text: str, token_ids: list[int],
                reason: str | None) -> tuple[AssistantMessage, Any]:
        """A whole choice's message and finish reason ("tool_calls" when auto found calls,
        as vLLM answers)."""
        if self.parsers is not None:
            parsed = self.parsers[i].parse(text, token_ids)
            calls = auto_calls(parsed, self.parallel)
            return (AssistantMessage(content=parsed.content, tool_calls=calls),
                    "tool_calls" if calls else reason)
        calls = tool_calls_of(self.plan, text)
        message = AssistantMessage(content=None, tool_calls=calls) if calls else \
            AssistantMessage(content=text)
        return message, finish_reason_of(self.plan, calls, reason)

    def delta(self, delta: ChoiceDelta, with_logprobs: bool) -> tuple[dict, Any] | None:
        """The stream `delta` and finish reason for one piece of a choice (None: send
        nothing now)."""
        reason = delta.finish_reason
        if self.parsers is not None:
            parsed = self.parsers[delta.index].parse_delta(delta.text, delta.token_ids,
                                                           finished=reason is not None)
            out = auto_delta(parsed, self.parallel)
            if "tool_calls" in out:
                self._called.add(delta.index)
            if reason == "stop" and delta.index in self._called:
                reason = "tool_calls"  # as vLLM streams it
        elif self.plan.mode != "none":
            self._held.setdefault(delta.index, []).append(delta.text)
            if reason is not None:
                return forced_final_delta(self.plan, "".join(self._held[delta.index]), reason)
            out = {}
        else:
            out = {"content": delta.text} if delta.text else {}
            if not out and reason is None and not delta.num_new_tokens:
                return None
            return out, reason
        if not out and reason is None and not (with_logprobs and delta.num_new_tokens):
            return None
        return out, reason


def forced_final_delta(tools: ToolPlan, text: str, reason: str) -> tuple[dict, str]:
    """The final delta of a forced tool call: the calls, or the raw text if cut short."""
    calls = tool_calls_of(tools, text)
    if not calls:
        return ({"content": text} if text else {}), reason
    return {"tool_calls": whole_call_deltas(calls)}, finish_reason_of(tools, calls, reason)
