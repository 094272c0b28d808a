"""Every request field OpenAI and vLLM document for /v1/completions and /v1/chat/completions,
and what this server does with it: the ONE table (docs/SERVING.md shows it).

The server fails closed: a field it does not act on is never silently dropped.

- ``honoured``: declared on the request models of `serve.protocol` and acted on.
- ``refused``: accepted only with a value that asks for nothing this server does not do
  (`noop`, e.g. ``"echo": false``); any other value is a 400 ``unsupported_parameter``
  naming the field and saying why.
- ``removed``: vLLM's former ``guided_*`` fields: always a 400 pointing to
  ``structured_outputs``.

Any other field is a 400 ``unknown_parameter`` ("Unrecognized request argument supplied: X",
as OpenAI's API answers). `screen_fields` applies the table to a request body before pydantic
validates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_core import PydanticCustomError

# Where a field may appear: the top level of either request body, `stream_options`, or one
# chat message.
Scope = Literal["completions", "chat", "stream_options", "message", "structured_outputs"]
Status = Literal["honoured", "refused", "removed"]
Origin = Literal["openai", "vllm"]

UNKNOWN_PARAMETER = "unknown_parameter"
UNSUPPORTED_PARAMETER = "unsupported_parameter"

_CMPL: frozenset[Scope] = frozenset({"completions"})
_CHAT: frozenset[Scope] = frozenset({"chat"})
_BOTH: frozenset[Scope] = frozenset({"completions", "chat"})
_STREAM: frozenset[Scope] = frozenset({"stream_options"})
_MESSAGE: frozenset[Scope] = frozenset({"message"})
_STRUCT: frozenset[Scope] = frozenset({"structured_outputs"})

_NOT_YET = "not supported yet"
_SAMPLER = "not supported yet (only temperature, top_p, seed, stop and penalties are)"
_TOOLS = "the deprecated function-calling fields are not supported; use 'tools'"
_TOOL_TURNS = "tool-call turns in the conversation are not supported yet"
_LOGPROBS = "not supported yet"
_NO_EFFECT = "accepted; it changes nothing this server returns"
_SPECIAL = ("special tokens are skipped (tool_choice auto keeps them when the tool-call parser "
            "reads them)")


@dataclass(frozen=True)
class FieldRule:
    """What the server does with one request field.

    `note` says what an honoured field does or why a refused one is refused; `noop` holds
    the values a refused field is accepted with (they ask for what the server does anyway);
    `example` is a value the server answers with a 400 (for the docs and the tests).
    """

    name: str
    scopes: frozenset[Scope]
    origin: Origin
    status: Status
    note: str
    noop: tuple[Any, ...] = (None,)
    example: Any = None


def _ok(name: str, scopes: frozenset[Scope], origin: Origin, note: str) -> FieldRule:
    return FieldRule(name, scopes, origin, "honoured", note)


def _no(name: str, scopes: frozenset[Scope], origin: Origin, note: str, example: Any,
        *noop: Any) -> FieldRule:
    """A refused field; `noop` values (and null) are accepted."""
    return FieldRule(name, scopes, origin, "refused", note, (None, *noop), example)


def _gone(name: str, use: str, example: Any) -> FieldRule:
    note = f"removed from vLLM; use 'structured_outputs': {{{use}}}"
    return FieldRule(name, _BOTH, "vllm", "removed", note, (), example)


FIELD_TABLE: tuple[FieldRule, ...] = (
    # --- OpenAI, both endpoints ------------------------------------------------------------
    _ok("model", _BOTH, "openai", "the served model or LoRA adapter; unknown names get 404"),
    _ok("max_tokens", _BOTH, "openai", "output token budget"),
    _ok("temperature", _BOTH, "openai", "sampling temperature, 0-2 (0: greedy)"),
    _ok("top_p", _BOTH, "openai", "nucleus sampling, (0, 1]"),
    _ok("n", _BOTH, "openai", "choices per prompt, up to --max-n"),
    _ok("seed", _BOTH, "openai", "reproducible sampling; choice i uses seed + i"),
    _ok("stop", _BOTH, "openai", "up to 16 stop strings, not included in the output"),
    _ok("stream", _BOTH, "openai", "Server-Sent Events"),
    _ok("stream_options", _BOTH, "openai", "see its own fields"),
    _ok("presence_penalty", _BOTH, "openai", "-2 to 2"),
    _ok("frequency_penalty", _BOTH, "openai", "-2 to 2"),
    _ok("user", _BOTH, "openai", "end-user id, written in the request's log line"),
    _no("logit_bias", _BOTH, "openai", _NOT_YET, {"50256": -100}, {}),
    _ok("response_format", _BOTH, "openai",
        "text, json_object or json_schema: the output is constrained by vLLM's structured-output "
        "backend; a schema that is not valid JSON Schema is a 400"),
    _ok("logprobs", _BOTH, "openai",
        "completions: the k (0-20) best candidates per token; chat: true for per-token "
        "log-probabilities (see top_logprobs)"),
    # --- OpenAI, completions only ----------------------------------------------------------
    _ok("prompt", _CMPL, "openai", "text, token ids, or a batch of either"),
    _ok("echo", _CMPL, "openai",
        "the prompt before the output (and its tokens in logprobs); with max_tokens 0, only "
        "the prompt"),
    _no("best_of", _CMPL, "openai", "not supported; use 'n'", 3, 1),
    _no("suffix", _CMPL, "openai", "insertion (suffix) is not supported", "end", ""),
    # --- OpenAI, chat only -----------------------------------------------------------------
    _ok("messages", _CHAT, "openai", "rendered with the model's chat template"),
    _ok("max_completion_tokens", _CHAT, "openai", "output token budget; wins over max_tokens"),
    _ok("safety_identifier", _CHAT, "openai", "end-user id, written in the request's log line"),
    _ok("prompt_cache_key", _CHAT, "openai",
        "a cache hint; vLLM's prefix cache reuses shared prefixes without it"),
    _ok("top_logprobs", _CHAT, "openai", "0-20 best candidates per token, with logprobs: true"),
    _ok("tools", _CHAT, "openai",
        "function definitions; each 'parameters' must be a valid JSON schema"),
    _ok("tool_choice", _CHAT, "openai",
        "none, required or a named function (forced by a JSON-schema structured output); auto "
        "(the default with tools): the model's own tool-call syntax read by vLLM's parser named "
        "by --tool-call-parser, a 400 when the server was started without it"),
    _ok("parallel_tool_calls", _CHAT, "openai",
        "false: tool_choice required makes exactly one call; auto returns the first call only"),
    _no("echo", _CHAT, "vllm", "echoing the last message is not supported", True, False),
    _no("functions", _CHAT, "openai", _TOOLS, [{"name": "f"}], []),
    _no("function_call", _CHAT, "openai", _TOOLS, "auto", "none"),
    _no("audio", _CHAT, "openai", "audio output is not supported",
        {"voice": "alloy", "format": "wav"}),
    _no("modalities", _CHAT, "openai", "only text output is supported", ["text", "audio"],
        ["text"]),
    _no("prediction", _CHAT, "openai", "predicted outputs are not supported",
        {"type": "content", "content": "x"}),
    _no("reasoning_effort", _CHAT, "openai", "reasoning controls are not supported", "low"),
    _no("verbosity", _CHAT, "openai", "verbosity controls are not supported", "low"),
    _no("web_search_options", _CHAT, "openai", "web search is not supported", {}),
    _no("store", _CHAT, "openai", "stored completions are not supported", True, False),
    _no("metadata", _CHAT, "openai", "stored completions are not supported", {"k": "v"}),
    _no("service_tier", _CHAT, "openai", "service tiers are not supported", "flex", "auto",
        "default"),
    # --- vLLM extensions, both endpoints ---------------------------------------------------
    _ok("ignore_eos", _BOTH, "vllm", "keep generating past end-of-sequence (load tests)"),
    _ok("add_special_tokens", _BOTH, "vllm",
        "add the tokenizer's special tokens (BOS) to the prompt; default true for completions, "
        "false for chat (the template places them)"),
    _ok("structured_outputs", _BOTH, "vllm",
        "one of json, regex, choice, grammar, json_object (see its own fields)"),
    _ok("prompt_logprobs", _BOTH, "vllm",
        "the k (0-20) best candidates at every prompt position, in vLLM's shape; not with "
        "stream"),
    _no("use_beam_search", _BOTH, "vllm", "beam search is not supported", True, False),
    _no("top_k", _BOTH, "vllm", _SAMPLER, 5, -1, 0),
    _no("min_p", _BOTH, "vllm", _SAMPLER, 0.1, 0.0),
    _no("repetition_penalty", _BOTH, "vllm", _SAMPLER, 1.2, 1.0),
    _no("length_penalty", _BOTH, "vllm", "beam search is not supported", 0.5, 1.0),
    _no("min_tokens", _BOTH, "vllm", _NOT_YET, 4, 0),
    _no("stop_token_ids", _BOTH, "vllm", f"{_NOT_YET}; use 'stop' strings", [2], []),
    _no("include_stop_str_in_output", _BOTH, "vllm", _NOT_YET, True, False),
    _no("skip_special_tokens", _BOTH, "vllm", _SPECIAL, False, True),
    _no("spaces_between_special_tokens", _BOTH, "vllm", _SPECIAL, False, True),
    _no("bad_words", _BOTH, "vllm", _NOT_YET, ["x"], []),
    _no("allowed_token_ids", _BOTH, "vllm", _NOT_YET, [1, 2]),
    _no("truncate_prompt_tokens", _BOTH, "vllm", "prompts are never truncated: shorten them",
        8),
    _no("truncation_side", _BOTH, "vllm", "prompts are never truncated: shorten them", "left"),
    _no("logprob_token_ids", _BOTH, "vllm", _LOGPROBS, [1]),
    _no("watermarking", _BOTH, "vllm", "watermarking is not supported", True, False),
    _no("priority", _BOTH, "vllm", "priority scheduling is not supported", 1, 0),
    _no("request_id", _BOTH, "vllm", "the server assigns request ids (see X-Request-Id)", "r1"),
    _no("session_id", _BOTH, "vllm", "sessions are not supported", "s1"),
    _no("return_tokens_as_token_ids", _BOTH, "vllm", _LOGPROBS, True, False),
    _no("return_token_ids", _BOTH, "vllm", "token ids are not returned", True, False),
    _no("return_token_offsets", _BOTH, "vllm", "token offsets are not returned", True, False),
    _no("routed_experts_prompt_start", _BOTH, "vllm", "routed-expert data is not returned", 4,
        0),
    _no("mm_payload", _BOTH, "vllm", "multimodal input is not supported", "none", "tensors"),
    _no("return_mm_kwargs", _BOTH, "vllm", "multimodal input is not supported", True),
    _no("cache_salt", _BOTH, "vllm", "prefix-cache salting is not supported", "salt"),
    _no("kv_transfer_params", _BOTH, "vllm", "disaggregated serving is not supported", {}),
    _no("ec_transfer_params", _BOTH, "vllm", "disaggregated serving is not supported", {}),
    _no("vllm_xargs", _BOTH, "vllm", "custom sampling arguments are not supported", {"k": 1}),
    _no("repetition_detection", _BOTH, "vllm", _NOT_YET, {}),
    _no("thinking_token_budget", _BOTH, "vllm", "reasoning controls are not supported", 64),
    _no("stream_interval", _BOTH, "vllm", "every token is streamed as it comes", 4, 1),
    # --- vLLM extensions, completions only -------------------------------------------------
    _no("prompt_embeds", _CMPL, "vllm", "prompt embeddings are not supported", "AAAA"),
    # --- vLLM extensions, chat only --------------------------------------------------------
    _no("add_generation_prompt", _CHAT, "vllm", "the assistant turn is always opened", False,
        True),
    _no("continue_final_message", _CHAT, "vllm", "the assistant turn is always opened", True,
        False),
    _no("documents", _CHAT, "vllm", "chat-template documents are not supported",
        [{"title": "t", "text": "x"}]),
    _no("chat_template", _CHAT, "vllm", "the model's own chat template is always used",
        "{{ messages }}"),
    _no("chat_template_kwargs", _CHAT, "vllm", "the model's own chat template is always used",
        {"enable_thinking": False}, {}),
    _no("media_io_kwargs", _CHAT, "vllm", "multimodal input is not supported", {"image": {}}),
    _no("mm_processor_kwargs", _CHAT, "vllm", "multimodal input is not supported", {"k": 1}),
    _no("include_reasoning", _CHAT, "vllm", "the server has no reasoning parser: the whole "
        "output is content", False, True),
    _no("return_prompt_text", _CHAT, "vllm", "the rendered prompt is not returned", True,
        False),
    # --- vLLM's removed guided decoding fields ---------------------------------------------
    _gone("guided_json", '"json": SCHEMA', {"type": "object"}),
    _gone("guided_regex", '"regex": PATTERN', "[a-z]+"),
    _gone("guided_choice", '"choice": [...]', ["yes", "no"]),
    _gone("guided_grammar", '"grammar": EBNF', "root ::= 'a'"),
    _gone("guided_json_object", '"json_object": true', True),
    _gone("guided_decoding_backend", '"backend": ...', "xgrammar"),
    _gone("guided_whitespace_pattern", '"whitespace_pattern": ...', " "),
    # --- stream_options ---------------------------------------------------------------------
    _ok("include_usage", _STREAM, "openai", "a final chunk with token usage"),
    _no("include_obfuscation", _STREAM, "openai", "stream obfuscation is not supported", True,
        False),
    _no("continuous_usage_stats", _STREAM, "vllm", "usage comes once, in the final chunk", True,
        False),
    # --- one chat message -------------------------------------------------------------------
    _ok("role", _MESSAGE, "openai", "system, developer, user, assistant or tool"),
    _ok("content", _MESSAGE, "openai", "text, or a list of text parts"),
    _ok("name", _MESSAGE, "openai", "passed to the chat template with the message"),
    _no("tool_calls", _MESSAGE, "openai", _TOOL_TURNS, [{"id": "c1", "type": "function"}], []),
    _no("tool_call_id", _MESSAGE, "openai", _TOOL_TURNS, "c1"),
    _no("function_call", _MESSAGE, "openai", _TOOLS, {"name": "f", "arguments": "{}"}),
    _no("audio", _MESSAGE, "openai", "audio is not supported", {"id": "a1"}),
    _no("refusal", _MESSAGE, "openai", "refusal turns are not supported", "no"),
    # --- structured_outputs (vLLM) ----------------------------------------------------------
    _ok("json", _STRUCT, "vllm", "a JSON schema (object or its JSON text) the output follows"),
    _ok("regex", _STRUCT, "vllm", "a regular expression the output matches"),
    _ok("choice", _STRUCT, "vllm", "the output is exactly one of these strings"),
    _ok("grammar", _STRUCT, "vllm", "an EBNF (GBNF) grammar the output follows"),
    _ok("json_object", _STRUCT, "vllm", "true: the output is a JSON object"),
    _no("disable_any_whitespace", _STRUCT, "vllm", "whitespace options are not supported", True,
        False),
    _no("disable_additional_properties", _STRUCT, "vllm", "schema rewriting is not supported",
        True, False),
    _no("whitespace_pattern", _STRUCT, "vllm", "whitespace options are not supported", " "),
    _no("structural_tag", _STRUCT, "vllm", "structural tags are not supported", "{}"),
)


def rules_for(scope: Scope) -> dict[str, FieldRule]:
    """The rules of every field that may appear in `scope`, by name."""
    return {rule.name: rule for rule in FIELD_TABLE if scope in rule.scopes}


def is_noop(value: Any, noops: tuple[Any, ...]) -> bool:
    """True if `value` is one of `noops` (a JSON-typed comparison: ``1`` is not ``true``)."""
    return any(_same(value, noop) for noop in noops)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def screen_fields(data: Mapping[str, Any], scope: Scope) -> dict[str, Any]:
    """`data` without the refused fields that carry a no-op value; raises a pydantic error
    (turned into a 400 by `serve.errors`) for unknown, removed and refused fields.

    Unknown fields are reported first, all of them at once, as OpenAI does.
    """
    rules = rules_for(scope)
    unknown = [name for name in data if name not in rules]
    if unknown:
        raise PydanticCustomError(UNKNOWN_PARAMETER, "Unrecognized request argument",
                                  {"fields": unknown, "detail": ""})
    kept: dict[str, Any] = {}
    for name, value in data.items():
        rule = rules[name]
        if rule.status == "honoured":
            kept[name] = value
        elif rule.status == "refused" and is_noop(value, rule.noop):
            continue
        else:
            verb = "is no longer supported" if rule.status == "removed" else \
                "is not supported by this server"
            raise unsupported_field(name, f"{verb}: {rule.note}")
    return kept


def unsupported_field(name: str, detail: str) -> PydanticCustomError:
    """The validation error for a field the server does not take: a 400
    ``unsupported_parameter`` whose message is ``'NAME' DETAIL``."""
    return PydanticCustomError(UNSUPPORTED_PARAMETER, "Unsupported request argument",
                               {"fields": [name], "detail": detail})


def refused_schema(scope: Scope) -> dict[str, dict[str, Any]]:
    """JSON-schema properties documenting the refused fields of `scope`: each may be sent
    only with one of its no-op values."""
    return {rule.name: {"description": f"Not supported ({rule.note}); accepted only as a "
                                       "no-op value", "enum": list(rule.noop)}
            for rule in rules_for(scope).values() if rule.status == "refused"}
