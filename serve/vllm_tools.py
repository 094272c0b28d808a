"""`tool_choice: "auto"` with vLLM's own tool-call parsers, as `vllm serve
--enable-auto-tool-choice --tool-call-parser NAME` runs them.

The parser named by `--tool-call-parser` is composed the way vLLM's chat server composes it
(`vllm.parser.ParserManager.get_parser`, which also checks it against the model's tokenizer),
given vLLM's own `ChatCompletionRequest` built from the request's messages and tools, allowed
its `adjust_request` (e.g. hermes keeps special tokens in the text; tools marked `strict` get a
structural tag), and run on each choice's output (`parse`, or `parse_delta` when streaming).
Nothing here parses: the syntax of each model family is vLLM's.

Imported only when vLLM is installed (by `serve.vllm_engine`, and by `serve.cli` to check the
parser's name before any engine starts); the route tests build a parser here on a tokenizer of
their own and hand it to the fake engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from serve.engine import (
    InvalidGenerationError,
    ParsedDelta,
    ParsedOutput,
    ParsedToolCall,
    StructuredKind,
    StructuredOutput,
    ToolCallDelta,
    ToolCallParsing,
    ToolCallRequest,
)
from serve.settings import ServeConfigError
from serve.vllm_params import structured_outputs_params

# What a parser's `adjust_request` may change and the server passes on to generation; a change
# to any other field of the request would be lost, so it is refused (see `_passed_on`).
_PASSED_ON = frozenset({"structured_outputs", "skip_special_tokens",
                        "spaces_between_special_tokens"})
_KINDS: tuple[StructuredKind, ...] = ("json", "regex", "choice", "grammar", "json_object",
                                      "structural_tag")


def parser_names() -> list[str]:
    """The names `--tool-call-parser` takes: vLLM's registered tool parsers."""
    from vllm.tool_parsers import ToolParserManager

    return ToolParserManager.list_registered()


def check_parser_name(name: str) -> None:
    """Raise `ServeConfigError` (one line, listing the valid names) unless vLLM has a tool
    parser called `name`."""
    names = parser_names()
    if name not in names:
        raise ServeConfigError(f"--tool-call-parser {name!r} is not a vLLM tool-call parser; "
                               f"choose one of: {', '.join(names)}")


def parser_class(name: str, tokenizer: Any, model: str) -> type:
    """vLLM's composed `Parser` class for tool parser `name`, checked against `tokenizer` as
    vLLM checks it at start-up; `ServeConfigError` naming the flag if the two do not fit."""
    from vllm.parser import ParserManager

    try:
        parser = ParserManager.get_parser(tool_parser_name=name, enable_auto_tools=True,
                                          model_name=model, tokenizer=tokenizer)
    except (TypeError, KeyError, ValueError) as exc:
        raise ServeConfigError(" ".join(str(exc).split())) from exc
    if parser is None:  # not expected: get_parser returns None only without a name
        raise ServeConfigError(f"vLLM has no tool-call parser {name!r}")
    return parser


def tool_call_parsing(parser_cls: type, tokenizer: Any, request: ToolCallRequest, *,
                      model: str, model_config: Any = None) -> ToolCallParsing:
    """How `request` is generated and read back with vLLM's parser `parser_cls`."""
    vllm_request = _vllm_request(request, model)
    before = vllm_request.model_dump()
    adjusted = parser_cls(tokenizer, vllm_request.tools,
                          model_config=model_config).adjust_request(vllm_request)
    _passed_on(before, adjusted.model_dump())
    prompt = list(request.prompt_token_ids)

    def new_parser() -> VllmToolCallParser:
        parser = parser_cls(tokenizer, adjusted.tools, model_config=model_config)
        parser.set_prompt_token_ids(prompt)
        return VllmToolCallParser(parser, adjusted, prompt)

    return ToolCallParsing(
        structured=_constraint(adjusted.structured_outputs, request.structured),
        skip_special_tokens=bool(adjusted.skip_special_tokens),
        spaces_between_special_tokens=bool(adjusted.spaces_between_special_tokens),
        new_parser=new_parser)


class VllmToolCallParser:
    """One choice's vLLM `Parser`, answering in the engine's plain data."""

    def __init__(self, parser: Any, request: Any, prompt_token_ids: list[int]):
        self._parser = parser
        self._request = request
        self._prompt = prompt_token_ids

    def parse(self, text: str, token_ids: Sequence[int]) -> ParsedOutput:
        # No reasoning parser is configured, so vLLM's reasoning part is always None.
        _, content, calls = self._parser.parse(text, self._request, enable_auto_tools=True,
                                               model_output_token_ids=list(token_ids))
        return ParsedOutput(content, tuple(ParsedToolCall(c.name, c.arguments, c.id)
                                           for c in calls or ()))

    def parse_delta(self, text: str, token_ids: Sequence[int], *,
                    finished: bool) -> ParsedDelta | None:
        delta = self._parser.parse_delta(text, list(token_ids), self._request,
                                         prompt_token_ids=self._prompt, finished=finished)
        if delta is None:
            return None
        calls = tuple(ToolCallDelta(tc.index, tc.id,
                                    tc.function.name if tc.function else None,
                                    tc.function.arguments if tc.function else None)
                      for tc in delta.tool_calls or ())
        return ParsedDelta(delta.content, calls)


def _vllm_request(request: ToolCallRequest, model: str) -> Any:
    """vLLM's `ChatCompletionRequest` for `request`: what its parsers read."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    fields: dict[str, Any] = {"model": model, "messages": [dict(m) for m in request.messages],
                              "tools": [dict(t) for t in request.tools], "tool_choice": "auto"}
    if request.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    try:
        vllm_request = ChatCompletionRequest.model_validate(fields)
    except ValueError as exc:  # pydantic's ValidationError: vLLM refuses what we accepted
        raise InvalidGenerationError(f"vLLM's tool-call parsing refuses the request: {exc}",
                                     "tools") from exc
    vllm_request.structured_outputs = structured_outputs_params(request.structured)
    return vllm_request


def _passed_on(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Refuse (fail closed) a parser that changes a request field generation does not take."""
    lost = sorted(k for k in after if k not in _PASSED_ON and after[k] != before.get(k))
    if lost:
        raise InvalidGenerationError(
            f"the tool-call parser asks to change {', '.join(lost)} of the request, which this "
            "server does not pass on to generation; use 'required', 'none' or a named function",
            "tool_choice")


def _constraint(adjusted: Any, given: StructuredOutput | None) -> StructuredOutput | None:
    """The constraint generation follows: the request's own, unless the parser replaced it
    (e.g. by a structural tag for strict tools, which then names `tools` in errors)."""
    if adjusted is None:
        return None
    values = {kind: getattr(adjusted, kind, None) for kind in _KINDS}
    set_kinds = [kind for kind, value in values.items() if value not in (None, False)]
    if given is not None and set_kinds == [given.kind]:
        ours = structured_outputs_params(given)
        if getattr(ours, given.kind) == values[given.kind]:
            return given
    if len(set_kinds) != 1:
        raise InvalidGenerationError("the tool-call parser asks for an output constraint this "
                                     f"server cannot pass on ({adjusted})", "tools")
    (kind,) = set_kinds
    value = tuple(values[kind]) if kind == "choice" else values[kind]
    return StructuredOutput(kind, value, "tools")
