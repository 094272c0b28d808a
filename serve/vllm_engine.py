"""The Engine protocol on vLLM's `AsyncLLM`: one engine per served model folder.

Merged exports are separate base models (each its own `AsyncLLM`); LoRA adapters ride on their
base's engine as `LoRARequest`s selected by name. vLLM is imported only when an engine is
built, so the HTTP layer and its tests never need it.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serve.engine import (
    ChatTemplateMissingError,
    ChatTemplateRenderError,
    EngineLoad,
    EngineUnavailableError,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
    InvalidGenerationError,
    LoraAdapterError,
    ModelCard,
    TokenLogprob,
    ToolCallParsing,
    ToolCallRequest,
    UnknownLoraError,
    UnknownModelError,
    find_model,
)
from serve.grammar_reach import FirstTokenProbe
from serve.kv_cache import (
    GIB,
    EngineStartError,
    KvCachePlan,
    check_fits,
    plan_kv_cache,
    read_memory,
    start_failure,
    weights_bytes,
)
from serve.settings import LoraSource, ModelSource, ServeConfigError, ServeSettings
from serve.vllm_params import engine_dtype, sampling_params, token_logprobs
from serve.vllm_tools import parser_class, tool_call_parsing

logger = logging.getLogger(__name__)


@dataclass
class _Served:
    """A base model's engine and tokenizer (adapters point at the same object)."""

    engine: Any  # vllm.v1.engine.async_llm.AsyncLLM
    tokenizer: Any
    scheduler: _SchedulerStatsProbe
    probe: FirstTokenProbe | None = None  # built on the first constrained request
    lora: bool = False  # started with LoRA support (adapters can be loaded onto it)
    tool_parser: type | None = None  # vLLM's `Parser` class for --tool-call-parser


@dataclass
class _Route:
    served: _Served
    lora_request: Any | None  # vllm.lora.request.LoRARequest


class _SchedulerStatsProbe:
    """Holds the scheduler's last reported running/waiting counts.

    Filled by a vLLM stat logger (see `_probe_factory`); vLLM only reports while it steps, so
    the counts are combined with the frontend's exact unfinished-request count in `load()`.
    """

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0


def _probe_factory(probe: _SchedulerStatsProbe):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _ProbeLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0):
            self.engine_index = engine_index

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            if scheduler_stats is not None:
                probe.running = scheduler_stats.num_running_reqs
                probe.waiting = scheduler_stats.num_waiting_reqs

        def log_engine_initialized(self) -> None:
            pass

    return _ProbeLogger


def engine_args_for(source: ModelSource, settings: ServeSettings, kv: KvCachePlan, *,
                    enable_lora: bool) -> Any:
    """The `AsyncEngineArgs` for one model folder under `settings`, with the KV cache `kv`."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
        "model": str(source.path),
        "tokenizer": str(source.path),
        "served_model_name": source.name,
        "dtype": engine_dtype(source.path, settings.dtype),
        "max_model_len": settings.max_model_len,
        "enforce_eager": settings.enforce_eager,
        "disable_log_stats": True,  # our probe logger still receives scheduler stats
        "enable_log_requests": False,
        "max_num_seqs": settings.max_num_seqs,
        "tensor_parallel_size": settings.tensor_parallel_size,
    }
    if kv.memory_fraction is not None:
        kwargs["gpu_memory_utilization"] = kv.memory_fraction
    if kv.gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv.gib * GIB)
    if enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank,
                      max_loras=settings.max_loras)
    return AsyncEngineArgs(**kwargs)


def _platform_is_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()
    except Exception as exc:  # vLLM's platform detection (e.g. two device plugins installed)
        raise EngineStartError(f"vLLM could not start: it cannot pick a device ({exc}); set "
                               "VLLM_TARGET_DEVICE=cpu to run on the CPU") from exc


async def _start_base(source: ModelSource, adapters: Sequence[LoraSource],
                      settings: ServeSettings, kv: KvCachePlan, lora_ids: Iterator[int],
                      ) -> tuple[_Served, list[ModelCard], dict[str, _Route]]:
    """Start the engine of one base model and load its adapters; stopped again on failure."""
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

    probe = _SchedulerStatsProbe()
    started = time.monotonic()
    logger.info("starting vLLM engine for %s (%s)", source.name, source.path)
    enable_lora = bool(adapters) or settings.runtime_lora_base == source.name
    engine = AsyncLLM.from_engine_args(
        engine_args_for(source, settings, kv, enable_lora=enable_lora),
        stat_loggers=[_probe_factory(probe)])
    try:
        served = _Served(engine, engine.get_tokenizer(), probe, lora=enable_lora)
        if settings.tool_call_parser is not None:
            # vLLM's own start-up check: the parser must fit the tokenizer.
            served.tool_parser = parser_class(settings.tool_call_parser, served.tokenizer,
                                              source.name)
        config = engine.model_config
        created = int(time.time())
        card = ModelCard(source.name, max_model_len=config.max_model_len,
                         vocab_size=config.get_vocab_size(), created=created)
        cards, routes = [card], {source.name: _Route(served, None)}
        for adapter in adapters:
            routes[adapter.name] = _Route(served, _lora_request(LoRARequest, adapter,
                                                                next(lora_ids)))
            cards.append(ModelCard(adapter.name, max_model_len=card.max_model_len,
                                   vocab_size=card.vocab_size, parent=source.name,
                                   created=created))
        for adapter in adapters:
            # Load now so a broken adapter fails at start-up, not on the first request.
            await engine.add_lora(routes[adapter.name].lora_request)
    except BaseException:
        engine.shutdown()
        raise
    logger.info("engine for %s ready in %.1f s (max_model_len=%d, %d adapters)", source.name,
                time.monotonic() - started, card.max_model_len, len(adapters))
    return served, cards, routes


class VllmEngine:
    """`Engine` backed by one vLLM `AsyncLLM` per base model."""

    def __init__(self, cards: Sequence[ModelCard], routes: Mapping[str, _Route],
                 bases: Sequence[_Served], lora_ids: Iterator[int] | None = None):
        self._cards = tuple(cards)
        self._routes = dict(routes)
        self._bases = tuple(bases)
        self._closed = False
        self._adapters = _RuntimeAdapters(lora_ids or itertools.count(1))

    @classmethod
    async def start(cls, settings: ServeSettings) -> VllmEngine:
        """Build every engine in `settings` (tens of seconds each on CPU).

        Raises `EngineStartError` (one line naming the cause and the flag) when the KV cache
        cannot fit, before vLLM starts, or when vLLM fails to start an engine.
        """
        on_cpu = _platform_is_cpu()
        memory, weights = read_memory(), weights_bytes(settings)
        kv = plan_kv_cache(settings, on_cpu=on_cpu, memory=memory, weights=weights)
        logger.info("%s", kv.message)
        check_fits(kv, settings, on_cpu=on_cpu, memory=memory, weights=weights)
        cards: list[ModelCard] = []
        routes: dict[str, _Route] = {}
        bases: list[_Served] = []
        lora_ids = itertools.count(1)
        for source in settings.models:
            adapters = [lo for lo in settings.loras if lo.base == source.name]
            try:
                served, base_cards, base_routes = await _start_base(source, adapters, settings,
                                                                    kv, lora_ids)
            except BaseException as exc:
                for done in bases:
                    done.engine.shutdown()
                if isinstance(exc, ServeConfigError):  # names the flag already
                    raise EngineStartError(str(exc)) from exc
                if isinstance(exc, Exception):
                    raise start_failure(source.name, exc, on_cpu=on_cpu,
                                        memory=read_memory()) from exc
                raise
            bases.append(served)
            cards += base_cards
            routes.update(base_routes)
        return cls(cards, routes, bases, lora_ids)

    def models(self) -> Sequence[ModelCard]:
        return self._cards

    def _route(self, model: str) -> _Route:
        route = self._routes.get(model)
        if route is None:
            raise UnknownModelError(model, [c.name for c in self._cards])
        return route

    async def encode(self, model: str, text: str, *, add_special_tokens: bool) -> list[int]:
        tokenizer = self._route(model).served.tokenizer
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))

    async def decode(self, model: str, token_ids: Sequence[int]) -> str:
        tokenizer = self._route(model).served.tokenizer
        return tokenizer.decode(list(token_ids))

    async def render_chat(self, model: str, messages: Sequence[Mapping[str, Any]], *,
                          tools: Sequence[Mapping[str, Any]] | None = None) -> str:
        tokenizer = self._route(model).served.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateMissingError(model)
        try:
            return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                 add_generation_prompt=True,
                                                 tools=list(tools) if tools else None)
        except Exception as exc:  # jinja2 errors, raise_exception() inside templates
            raise ChatTemplateRenderError(f"The chat template of '{model}' rejected the "
                                          f"messages: {exc}") from exc

    async def tool_call_parsing(self, model: str, request: ToolCallRequest) -> ToolCallParsing:
        served = self._route(model).served
        if served.tool_parser is None:
            raise InvalidGenerationError("the server was started without --tool-call-parser",
                                         "tool_choice")
        return tool_call_parsing(served.tool_parser, served.tokenizer, request, model=model,
                                 model_config=served.engine.model_config)

    async def check(self, request: GenerationRequest) -> None:
        """vLLM's own request validation (`SamplingParams.verify`, which also compiles a
        structured-output constraint with the engine's backend), run before the response
        starts so that a bad schema, regex or grammar is a 400, also when streaming."""
        from vllm.exceptions import VLLMValidationError

        served = self._route(request.model).served
        config = served.engine.vllm_config
        try:
            params = sampling_params(request.sampling)
            params.verify(served.engine.model_config, config.speculative_config,
                          config.structured_outputs_config, served.tokenizer)
        except (VLLMValidationError, ValueError, TypeError, RuntimeError) as exc:
            structured = request.sampling.structured
            param = getattr(exc, "parameter", None)
            if param not in ("logprobs", "prompt_logprobs"):
                param = structured.param if structured is not None else param
            message = exc.args[0] if exc.args else str(exc)
            cause = exc.__cause__
            if cause is not None and str(cause) not in message:
                message = f"{message}: {cause}"  # the parser's own words
            raise InvalidGenerationError(message, param) from exc
        structured = request.sampling.structured  # compiled above: a bad one is the parser's 400
        so = params.structured_outputs
        if structured is not None and so is not None and so._backend == "xgrammar":
            await self._check_first_token(request.model, served, so, structured.param)

    async def _check_first_token(self, model: str, served: _Served, so: Any,
                                 param: str) -> None:
        """400 when no token of the model's vocabulary can begin what the constraint allows:
        vLLM would mask every logit, sample token 0 and abort the request."""
        if served.probe is None:
            config = served.engine.vllm_config
            served.probe = FirstTokenProbe(
                served.tokenizer, served.engine.model_config.get_vocab_size(),
                any_whitespace=not config.structured_outputs_config.disable_any_whitespace)
        try:
            allowed = await asyncio.to_thread(served.probe.allowed_first_tokens, so)
        except (RuntimeError, ValueError) as exc:  # xgrammar: advisory, vLLM still decides
            logger.warning("first-token check of a constraint failed (%s); passing it to vLLM",
                           exc)
            return
        if allowed == 0:
            raise InvalidGenerationError(
                f"the tokenizer of '{model}' has no token that can begin an output this "
                "constraint allows (e.g. no token starting with '{' for a JSON object), so "
                "it cannot be followed; loosen the constraint or use a model whose vocabulary "
                "spells it", param)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._closed:
            raise EngineUnavailableError("the engine is shutting down")
        route = self._route(request.model)
        s = request.sampling
        params = sampling_params(s)
        engine, tokenizer = route.served.engine, route.served.tokenizer
        prompt_ids = list(request.prompt_token_ids)
        # The renderer turns token ids into vLLM's engine input (its non-deprecated path).
        (prompt,) = engine.renderer.render_cmpl([{"prompt_token_ids": prompt_ids}])
        stream = engine.generate(prompt, params, request.request_id,
                                 lora_request=route.lora_request)
        self._adapters.started(route.lora_request)
        # Prompt logprobs may come in pieces (chunked prefill): sent once, when complete.
        prompt_positions: list[Any] = []
        prompt_sent = s.prompt_logprobs is None
        try:
            async for out in stream:
                completion = out.outputs[0]
                reason = completion.finish_reason if out.finished else None
                if reason == "error" and s.structured is not None:
                    # vLLM's scheduler ends a request whose grammar rejected the sampled token:
                    # every logit was masked (a dead end of the vocabulary, see grammar_reach).
                    raise InvalidGenerationError(
                        "the constrained output stopped midway: the model's vocabulary has no "
                        "token that continues what the constraint allows (vLLM's grammar "
                        "rejected the sampled token)",
                        s.structured.param)
                logprobs = None
                if s.logprobs is not None:
                    ids = list(completion.token_ids)
                    given = completion.logprobs
                    logprobs = token_logprobs(ids, given if given is not None else
                                              [None] * len(ids), s.logprobs, tokenizer)
                prompt_logprobs: tuple[TokenLogprob, ...] | None = None
                if not prompt_sent:
                    prompt_positions += list(out.prompt_logprobs or ())
                    if len(prompt_positions) >= len(prompt_ids) or out.finished:
                        padded = [*prompt_positions, *[None] * len(prompt_ids)]
                        prompt_logprobs = token_logprobs(
                            prompt_ids, padded[:len(prompt_ids)], s.prompt_logprobs, tokenizer)
                        prompt_sent = True
                yield GenerationDelta(completion.text, len(completion.token_ids),
                                      _finish_reason(reason), logprobs, prompt_logprobs,
                                      tuple(completion.token_ids))
        except EngineDeadError as exc:
            raise EngineUnavailableError("the vLLM engine has died; restart the server") from exc
        finally:
            # Closing vLLM's generator early (client gone) aborts the request inside vLLM.
            try:
                await stream.aclose()
            finally:
                await self._adapters.finished(route.lora_request, route.served)

    async def load_lora(self, name: str, path: str, *, base: str,
                        replace: bool = False) -> ModelCard:
        """Load the adapter with vLLM's `add_lora` (which checks it against the base model's
        modules and --max-lora-rank); only then is `name` routed to it."""
        if self._closed:
            raise EngineUnavailableError("the engine is shutting down")
        async with self._adapters.lock:
            existing = self._routes.get(name)
            if existing is not None and existing.lora_request is None:
                raise LoraAdapterError(f"'{name}' is the name of a served base model; choose "
                                       "another name for the adapter", param="lora_name",
                                       code="lora_name_taken")
            if existing is not None and not replace:
                raise LoraAdapterError(
                    f"The LoRA adapter '{name}' is already loaded; unload it first, or set "
                    "'load_inplace': true to replace its weights", param="lora_name",
                    code="lora_name_taken")
            served = self._route(base).served
            if not served.lora:
                raise LoraAdapterError(f"the engine of '{base}' was started without LoRA "
                                       "support (start it with --enable-lora)",
                                       param="lora_name", code="lora_not_enabled")
            request = self._adapters.request(name, path, existing and existing.lora_request)
            await self._adapters.add(served, request)
            card = find_model(self, base)
            lora_card = ModelCard(name, max_model_len=card.max_model_len,
                                  vocab_size=card.vocab_size, parent=base,
                                  created=int(time.time()))
            self._routes[name] = _Route(served, request)
            self._cards = (*(c for c in self._cards if c.name != name), lora_card)
            logger.info("loaded LoRA adapter %s from %s onto %s", name, path, base)
            return lora_card

    async def unload_lora(self, name: str) -> None:
        """Forget `name` at once (new requests naming it get 404); vLLM's copy is removed when
        the last request still running with it ends."""
        async with self._adapters.lock:
            route = self._routes.get(name)
            if route is None or route.lora_request is None:
                raise UnknownLoraError(name, [c.name for c in self._cards if c.parent])
            del self._routes[name]
            self._cards = tuple(c for c in self._cards if c.name != name)
            await self._adapters.remove(route.served, route.lora_request)
            logger.info("unloaded LoRA adapter %s", name)

    async def abort(self, request_id: str) -> None:
        for served in self._bases:
            await served.engine.abort(request_id)

    def load(self) -> EngineLoad:
        running = waiting = 0
        for served in self._bases:
            # The frontend count is exact (aborts remove requests at once); the scheduler's
            # split between running and waiting is as of its last step.
            total = served.engine.get_num_unfinished_requests()
            queued = min(served.scheduler.waiting, total)
            running += total - queued
            waiting += queued
        return EngineLoad(running, waiting)

    async def close(self) -> None:
        self._closed = True
        for served in self._bases:
            served.engine.shutdown()
        # Drop the engines and collect them now: vLLM's __del__ shuts down again, which fails
        # noisily when it only runs at interpreter exit (AsyncLLM sits in reference cycles).
        self._bases = ()
        self._routes.clear()
        gc.collect()


def _finish_reason(reason: str | None) -> FinishReason | None:
    """Ours for vLLM's: any reason but "stop" and "length" (abort, error, ...) is an abort."""
    if reason is None:
        return None
    return reason if reason in ("stop", "length") else "abort"


def _lora_request(cls: Any, adapter: LoraSource, lora_id: int) -> Any:
    return cls(lora_name=adapter.name, lora_int_id=lora_id, lora_path=str(adapter.path))


class _RuntimeAdapters:
    """The bookkeeping of adapters loaded and unloaded at run time: their vLLM ids, a lock
    so that loads and unloads happen one at a time, and the requests running with each adapter
    (an unloaded adapter leaves vLLM only when the last of them ends, so that vLLM does not
    read it from disk again mid-generation)."""

    def __init__(self, ids: Iterator[int]):
        self.lock = asyncio.Lock()
        self._ids = ids
        self._running: collections.Counter[int] = collections.Counter()
        self._unloaded: set[int] = set()

    def request(self, name: str, path: str, previous: Any | None) -> Any:
        """The `LoRARequest` for `name`; replacing `previous` keeps its id (vLLM's in-place
        reload)."""
        from vllm.lora.request import LoRARequest

        if previous is not None:
            return LoRARequest(lora_name=name, lora_int_id=previous.lora_int_id,
                               lora_path=path, load_inplace=True)
        return LoRARequest(lora_name=name, lora_int_id=next(self._ids), lora_path=path)

    async def add(self, served: _Served, request: Any) -> None:
        """vLLM's `add_lora`; its refusal (the adapter does not fit) becomes a 400."""
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            await served.engine.add_lora(request)
        except EngineDeadError as exc:
            raise EngineUnavailableError("the vLLM engine has died; restart the server") from exc
        except Exception as exc:  # vLLM returns the worker's error as a plain Exception
            if not request.load_inplace:
                # A shape mismatch fails after vLLM registered the adapter: drop that husk.
                await self._remove_now(served, request.lora_int_id)
            raise LoraAdapterError(f"vLLM cannot load the adapter at '{request.lora_path}': "
                                   f"{_worker_error(exc)}", param="lora_path",
                                   code="invalid_lora_adapter") from exc
        self._unloaded.discard(request.lora_int_id)

    def started(self, request: Any | None) -> None:
        if request is not None:
            self._running[request.lora_int_id] += 1

    async def finished(self, request: Any | None, served: _Served) -> None:
        if request is None:
            return
        lora_id = request.lora_int_id
        self._running[lora_id] -= 1
        if self._running[lora_id] <= 0:
            del self._running[lora_id]
            if lora_id in self._unloaded:
                await self._remove_now(served, lora_id)

    async def remove(self, served: _Served, request: Any) -> None:
        self._unloaded.add(request.lora_int_id)
        if not self._running[request.lora_int_id]:
            del self._running[request.lora_int_id]
            await self._remove_now(served, request.lora_int_id)

    async def _remove_now(self, served: _Served, lora_id: int) -> None:
        self._unloaded.discard(lora_id)
        try:
            await served.engine.remove_lora(lora_id)
        except Exception as exc:  # the name is gone already; vLLM's LRU cache evicts it later
            logger.warning("vLLM could not remove LoRA adapter %d: %s", lora_id, exc,
                           exc_info=True)


def _worker_error(exc: Exception) -> str:
    """The worker's own words inside vLLM's "Call to add_lora method failed: Worker failed with
    error '...', please check the stack trace above for the root cause"."""
    text = str(exc)
    found = re.search(r"failed with error '(.*)', please check", text, re.DOTALL)
    return found.group(1) if found else text.removeprefix("Call to add_lora method failed: ")
