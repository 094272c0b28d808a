"""A deterministic in-process engine for route tests (no model, no vLLM).

Tokens are whitespace-separated words (id = crc32 of the word modulo the vocabulary); the
generated text is the words ``" w<k>"`` where k depends only on the prompt, the seed and the
position, so the same request always yields the same text. Every request, abort and closing is
recorded so tests can assert what reached the engine.

Log-probabilities are made up but consistent: the token " w<k>" has id k and log-probability
-(k % 5 + 1) / 2, its candidates are ids k, k+1, ... with falling log-probabilities. A
structured output is "followed" as far as route tests need: a `choice` yields its first
option; `reply` (settable) is the text of every generation when not None, e.g. the JSON a
test wants the model to answer (each delta reports the token id its logprobs name). With
`tool_parser` (settable) given, `tool_call_parsing` hands requests to it: route tests give it
a real vLLM parser (`serve.vllm_tools`) on a tokenizer of their own. Its `check` refuses a
regex Python cannot compile and a grammar without a ``::=`` rule, standing in for vLLM's
backend. LoRA adapters load when their
`adapter_config.json` targets only modules of `LORA_MODULES` (standing in for vLLM's check that
an adapter fits its base); a loaded adapter generates what its base does.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serve.engine import (
    ChatTemplateMissingError,
    EngineLoad,
    EngineUnavailableError,
    GenerationDelta,
    GenerationRequest,
    InvalidGenerationError,
    LoraAdapterError,
    ModelCard,
    TokenLogprob,
    ToolCallParsing,
    ToolCallRequest,
    TopLogprob,
    UnknownLoraError,
    find_model,
)

BOS_ID = 1
# The modules of a Llama block: what a fake base model lets an adapter target.
LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj"})


class FakeEngine:
    """Engine protocol implementation with scripted, reproducible behaviour.

    `token_delay_s` sleeps before each token so tests can act mid-stream; `eos_after` ends a
    sequence with finish reason "stop" after that many tokens (None: only max_tokens stops it);
    `fail_after` raises `RuntimeError` after that many tokens (an engine crash).
    """

    def __init__(
        self,
        models: Sequence[ModelCard] = (ModelCard("fake", max_model_len=64, vocab_size=1000),),
        *,
        chat_models: Sequence[str] | None = None,
        token_delay_s: float = 0.0,
        eos_after: int | None = None,
        fail_after: int | None = None,
    ):
        self._models = tuple(models)
        self._chat_models = set(chat_models if chat_models is not None else
                                [m.name for m in self._models])
        self.token_delay_s = token_delay_s
        self.eos_after = eos_after
        self.fail_after = fail_after
        self.requests: list[GenerationRequest] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.closed = False
        self.reply: str | None = None
        self.rendered_tools: list[Sequence[Mapping[str, Any]] | None] = []
        # (model, request) -> ToolCallParsing; None: started without a tool-call parser.
        self.tool_parser: Callable[[str, ToolCallRequest], ToolCallParsing] | None = None
        self.tool_requests: list[ToolCallRequest] = []
        self.lora_paths: dict[str, str] = {}  # adapters loaded at run time: name -> folder
        self._active: dict[str, asyncio.Event] = {}

    def models(self) -> Sequence[ModelCard]:
        return self._models

    async def encode(self, model: str, text: str, *, add_special_tokens: bool) -> list[int]:
        card = find_model(self, model)
        ids = [zlib.crc32(word.encode()) % card.vocab_size for word in text.split()]
        return [BOS_ID, *ids] if add_special_tokens else ids

    async def decode(self, model: str, token_ids: Sequence[int]) -> str:
        find_model(self, model)
        return "".join(f" w{t}" for t in token_ids)

    async def check(self, request: GenerationRequest) -> None:
        find_model(self, request.model)
        spec = request.sampling.structured
        if spec is None:
            return
        if spec.kind == "regex":
            try:
                re.compile(spec.value)
            except (re.error, OverflowError, RecursionError) as exc:
                raise InvalidGenerationError(f"Failed to transform regex into a grammar: {exc}",
                                             spec.param) from exc
        if spec.kind == "grammar" and "::=" not in spec.value:
            raise InvalidGenerationError("Invalid grammar specification: no rule ('::=')",
                                         spec.param)

    async def tool_call_parsing(self, model: str, request: ToolCallRequest) -> ToolCallParsing:
        find_model(self, model)
        if self.tool_parser is None:
            raise InvalidGenerationError("the server was started without --tool-call-parser",
                                         "tool_choice")
        self.tool_requests.append(request)
        return self.tool_parser(model, request)

    async def render_chat(self, model: str, messages: Sequence[Mapping[str, Any]], *,
                          tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        self.rendered_tools.append(tools)
        card = find_model(self, model)
        base = card.parent or card.name
        if base not in self._chat_models:
            raise ChatTemplateMissingError(model)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if self.closed:
            raise EngineUnavailableError("engine is closed")
        find_model(self, request.model)
        self.requests.append(request)
        cancelled = asyncio.Event()
        self._active[request.request_id] = cancelled
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else 0
        base = sum(request.prompt_token_ids) + 7 * seed
        script = self._script(sampling)
        text = ""
        try:
            if sampling.prompt_logprobs is not None:
                # Real engines report prompt logprobs with the first output.
                yield GenerationDelta("", 0, None, None, _prompt_logprobs(
                    request.prompt_token_ids, sampling.prompt_logprobs))
            for step in range(sampling.max_tokens):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if cancelled.is_set():
                    yield GenerationDelta("", 0, "abort")
                    return
                if self.fail_after is not None and step >= self.fail_after:
                    raise RuntimeError("fake engine crashed")
                token_id = (base + 31 * step) % 97
                piece = f" w{token_id}" if script is None else script[step]
                text += piece
                for stop in sampling.stop:
                    cut = text.find(stop)
                    if cut >= 0:
                        # The stop string is not part of the output (OpenAI semantics).
                        kept = text[:cut][len(text) - len(piece):]
                        yield GenerationDelta(kept, 1, "stop", token_ids=(token_id,))
                        return
                done = (self.eos_after is not None and not sampling.ignore_eos
                        and step + 1 >= self.eos_after)
                done = done or (script is not None and step + 1 == len(script))
                last = step + 1 == sampling.max_tokens
                reason = "stop" if done else ("length" if last else None)
                logprobs = None if sampling.logprobs is None else \
                    (_logprob(token_id, piece, sampling.logprobs),)
                yield GenerationDelta(piece, 1, reason, logprobs, token_ids=(token_id,))
                if done:
                    return
        finally:
            self._active.pop(request.request_id, None)
            self.finished.append(request.request_id)

    def _script(self, sampling: Any) -> list[str] | None:
        """The pieces of a scripted answer (`reply`, or a choice), one per token."""
        spec = sampling.structured
        text = self.reply
        if text is None and spec is not None and spec.kind == "choice":
            text = spec.value[0]
        if text is None:
            return None
        return re.findall(r"\s*\S+", text) or [text]

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        event = self._active.get(request_id)
        if event is not None:
            event.set()

    async def load_lora(self, name: str, path: str, *, base: str,
                        replace: bool = False) -> ModelCard:
        existing = next((m for m in self._models if m.name == name), None)
        if existing is not None and (existing.parent is None or not replace):
            what = "a served base model" if existing.parent is None else "already loaded"
            raise LoraAdapterError(f"'{name}' is {what}", param="lora_name",
                                   code="lora_name_taken")
        card = find_model(self, base)
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        unknown = sorted(set(config.get("target_modules") or ()) - LORA_MODULES)
        if unknown:
            raise LoraAdapterError(f"the base model has no module {', '.join(unknown)}",
                                   param="lora_path", code="invalid_lora_adapter")
        lora = ModelCard(name, card.max_model_len, card.vocab_size, parent=base,
                         created=int(time.time()))
        self._models = (*(m for m in self._models if m.name != name), lora)
        self.lora_paths[name] = path
        return lora

    async def unload_lora(self, name: str) -> None:
        if not any(m.name == name and m.parent is not None for m in self._models):
            raise UnknownLoraError(name, [m.name for m in self._models if m.parent])
        self._models = tuple(m for m in self._models if m.name != name)
        self.lora_paths.pop(name, None)

    def load(self) -> EngineLoad:
        return EngineLoad(running=len(self._active), waiting=0)

    async def close(self) -> None:
        for request_id in list(self._active):
            await self.abort(request_id)
        self.closed = True


def _logprob(token_id: int, piece: str, k: int) -> TokenLogprob:
    logprob = -((token_id % 5) + 1) / 2
    top = tuple(TopLogprob(token_id + j, f" w{token_id + j}", logprob - j, j + 1)
                for j in range(k))
    return TokenLogprob(token_id, piece, logprob, 1, top)


def _prompt_logprobs(ids: Sequence[int], k: int) -> tuple[TokenLogprob, ...]:
    first = TokenLogprob(ids[0], f" w{ids[0]}", None, None)
    rest = (_logprob(t, f" w{t}", k) for t in ids[1:])
    return (first, *rest)
