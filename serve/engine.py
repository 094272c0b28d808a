"""The engine protocol the HTTP layer talks to, and the plain data it exchanges.

The routes never import vLLM: they see `Engine`, implemented by `serve.vllm_engine.VllmEngine`
and by `serve.fake_engine.FakeEngine` in route tests. One engine request generates ONE
sequence; the handlers fan out `n` choices and batched prompts into several requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

# Why a sequence ended; the HTTP layer reports it to clients as is.
FinishReason = Literal["stop", "length", "abort"]


class EngineError(Exception):
    """Base of errors raised by an engine that the HTTP layer maps to a response."""


class UnknownModelError(EngineError):
    """The request names a model the engine does not serve."""

    def __init__(self, model: str, served: Sequence[str]):
        self.model = model
        super().__init__(
            f"The model '{model}' does not exist. Served models: {', '.join(served)}")


class ChatTemplateMissingError(EngineError):
    """Chat was asked of a model whose tokenizer has no chat template."""

    def __init__(self, model: str):
        super().__init__(
            f"Model '{model}' has no chat template; use /v1/completions with a plain prompt, "
            "or serve a model whose tokenizer_config.json has a chat_template.")


class ChatTemplateRenderError(EngineError):
    """The chat template rejected the messages (e.g. roles in an order it does not allow)."""


class EngineUnavailableError(EngineError):
    """The engine is shutting down or has died; requests cannot be served."""


class InvalidGenerationError(EngineError):
    """The engine refuses the request's options (e.g. a JSON schema, regex or grammar its
    structured-output backend cannot compile); `param` names the request field, and the
    message is the engine's (the parser's) own."""

    def __init__(self, message: str, param: str | None = None):
        self.param = param
        super().__init__(message)


class LoraAdapterError(EngineError):
    """A LoRA adapter cannot be loaded or unloaded (a broken or unfitting adapter folder, a name
    already taken, a base without LoRA support); `param` names the request field, `code` the
    problem."""

    def __init__(self, message: str, *, param: str, code: str):
        self.param, self.code = param, code
        super().__init__(message)


class UnknownLoraError(LoraAdapterError):
    """Unloading an adapter that is not loaded."""

    def __init__(self, name: str, loaded: Sequence[str]):
        listed = ", ".join(loaded) or "none"
        super().__init__(f"The LoRA adapter '{name}' is not loaded. Loaded adapters: {listed}",
                         param="lora_name", code="lora_not_found")


@dataclass(frozen=True)
class ModelCard:
    """One servable model: a base model (`parent is None`) or a LoRA adapter on `parent`."""

    name: str
    max_model_len: int
    vocab_size: int
    parent: str | None = None
    created: int = 0


# A structured-output constraint, as vLLM's `StructuredOutputsParams` names them.
StructuredKind = Literal["json", "regex", "choice", "grammar", "json_object", "structural_tag"]


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain the output to `value`: a JSON schema (dict) for "json", a pattern for "regex",
    a tuple of strings for "choice", an EBNF/Lark grammar for "grammar", True for
    "json_object", a structural tag's JSON text for "structural_tag" (only ever asked for by a
    tool-call parser, see `ToolCallParsing`). `param` is the request field it came from, for
    error messages."""

    kind: StructuredKind
    value: Any
    param: str


@dataclass(frozen=True)
class TopLogprob:
    """One candidate token at a position: its id, text, log-probability and rank (1 = best)."""

    token_id: int
    token: str
    logprob: float
    rank: int


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of the token at one position and the best `k` candidates there.

    `logprob` is None only for a prompt's first token (nothing precedes it); `top` is ordered
    by rank and may or may not contain the token itself.
    """

    token_id: int
    token: str
    logprob: float | None
    rank: int | None
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling settings of one sequence (already validated by the HTTP layer).

    `logprobs`: return the log-probability of each generated token and its `logprobs` best
    candidates (None: none); `prompt_logprobs`: the same for every prompt token;
    `structured`: constrain the output (decoded by the engine's structured-output backend);
    `skip_special_tokens`, `spaces_between_special_tokens`: how the output is detokenised (a
    tool-call parser may need the special tokens in the text).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    structured: StructuredOutput | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True


@dataclass(frozen=True)
class GenerationRequest:
    """Generate one sequence for `prompt_token_ids` with `model` (base or adapter name)."""

    request_id: str
    model: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingOptions


@dataclass(frozen=True)
class GenerationDelta:
    """Text produced since the previous delta of the same request.

    `num_new_tokens` counts the tokens behind `text` (`token_ids`, when the engine reports
    them); the last delta carries `finish_reason`. `logprobs` has one entry per new token when
    the request asked for them; `prompt_logprobs` (one entry per prompt token) comes once, with
    the first delta.
    """

    text: str
    num_new_tokens: int
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ToolCallRequest:
    """A chat request with `tool_choice: "auto"`, as a tool-call parser reads it: the messages
    and tools as the chat template received them, the prompt they made, and the request's own
    output constraint (None: unconstrained)."""

    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...]
    prompt_token_ids: tuple[int, ...]
    parallel_tool_calls: bool | None = None
    structured: StructuredOutput | None = None


@dataclass(frozen=True)
class ParsedToolCall:
    """One call the parser found: the function's name and its arguments as JSON text; `id`
    is the parser's (None: the server makes one)."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ParsedOutput:
    """A whole output, parsed: the text that is not a call (None: none) and the calls."""

    content: str | None
    calls: tuple[ParsedToolCall, ...] = ()


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed call `index`: its id and name come once, the arguments' JSON text
    in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str | None = None


@dataclass(frozen=True)
class ParsedDelta:
    """What one streamed piece of output adds: text and/or pieces of calls."""

    content: str | None = None
    calls: tuple[ToolCallDelta, ...] = ()


class ToolCallParser(Protocol):
    """Reads the model's own tool-call syntax out of ONE choice's output; it keeps state while
    streaming, so every choice gets its own."""

    def parse(self, text: str, token_ids: Sequence[int]) -> ParsedOutput:
        """The content and calls of a whole output."""
        ...

    def parse_delta(self, text: str, token_ids: Sequence[int], *,
                    finished: bool) -> ParsedDelta | None:
        """What the next streamed piece adds (None: nothing to send yet); `finished` on the
        last piece."""
        ...


@dataclass(frozen=True)
class ToolCallParsing:
    """How one `tool_choice: "auto"` request is generated and read back: the constraint and
    detokenisation the parser asks for, and `new_parser()` for each choice."""

    structured: StructuredOutput | None
    skip_special_tokens: bool
    spaces_between_special_tokens: bool
    new_parser: Callable[[], ToolCallParser]


@dataclass(frozen=True)
class EngineLoad:
    """Requests the engine's scheduler holds: generating (`running`) and queued (`waiting`)."""

    running: int
    waiting: int


@runtime_checkable
class Engine(Protocol):
    """What the HTTP layer needs from an inference engine."""

    def models(self) -> Sequence[ModelCard]:
        """Every servable model, base models first."""
        ...

    async def encode(self, model: str, text: str, *, add_special_tokens: bool) -> list[int]:
        """Token ids of `text` with `model`'s tokenizer."""
        ...

    async def decode(self, model: str, token_ids: Sequence[int]) -> str:
        """The text of `token_ids` with `model`'s tokenizer (special tokens kept)."""
        ...

    async def render_chat(self, model: str, messages: Sequence[Mapping[str, Any]], *,
                          tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The prompt text `model`'s chat template makes of `messages` (and the function
        `tools` the model may call), ready for generation."""
        ...

    async def tool_call_parsing(self, model: str, request: ToolCallRequest) -> ToolCallParsing:
        """The tool-call parser the engine was started with, set up for `request` (raises
        `InvalidGenerationError` naming `tool_choice` if it has none)."""
        ...

    async def check(self, request: GenerationRequest) -> None:
        """Raise `InvalidGenerationError` if the engine would refuse `request` (a structured
        output its backend cannot compile, too many logprobs), before anything is sent."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream the deltas of one sequence; closing the iterator early aborts the request."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop `request_id` and free its resources (no-op if it already finished)."""
        ...

    async def load_lora(self, name: str, path: str, *, base: str,
                        replace: bool = False) -> ModelCard:
        """Load the PEFT adapter folder `path` onto base model `base` and serve it as `name`;
        with `replace`, an adapter already loaded as `name` gets the new weights in place.
        Raises `LoraAdapterError` (naming the field) if the adapter does not fit the base or
        the name is taken."""
        ...

    async def unload_lora(self, name: str) -> None:
        """Stop serving adapter `name` (requests already running with it finish); raises
        `UnknownLoraError` if no adapter of that name is loaded."""
        ...

    def load(self) -> EngineLoad:
        """The scheduler's current running/waiting counts (as last reported by the engine)."""
        ...

    async def close(self) -> None:
        """Shut the engine down, aborting whatever is still running."""
        ...


def find_model(engine: Engine, name: str) -> ModelCard:
    """The card of `name`, or `UnknownModelError` listing what is served."""
    cards = engine.models()
    for card in cards:
        if card.name == name:
            return card
    raise UnknownModelError(name, [c.name for c in cards])
