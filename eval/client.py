"""Async client for any OpenAI-compatible server (completions or chat completions), streaming.

Every request streams (``stream: true`` with ``stream_options.include_usage``) so the same
call yields the text and per-request timing, measured as vLLM's ``vllm bench serve`` does:
TTFT = first chunk carrying choices - send time; ITL = gaps between later such chunks;
E2E = last such chunk - send time; output tokens from the final usage chunk (else the
number of content chunks). Retries happen only when the connection cannot be made; HTTP
errors, timeouts and broken streams are returned as failed outcomes, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Self

import httpx

from eval.cache import GenerationCache, cache_key

logger = logging.getLogger(__name__)

Endpoint = Literal["completions", "chat"]
ENDPOINTS: tuple[str, ...] = ("completions", "chat")
Prompt = str | list[dict[str, str]]  # raw prompt (completions) or chat messages (chat)


class EndpointConfigError(ValueError):
    """The client settings are unusable; the message names the setting."""


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to send requests."""

    base_url: str
    model: str
    endpoint: Endpoint = "completions"
    concurrency: int = 8
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise EndpointConfigError(f"base URL must start with http:// or https://, got {self.base_url!r}")
        if self.endpoint not in ENDPOINTS:
            raise EndpointConfigError(f"endpoint must be one of {ENDPOINTS}, got {self.endpoint!r}")
        if self.concurrency < 1:
            raise EndpointConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise EndpointConfigError("timeouts must be > 0 seconds")
        if self.max_retries < 0:
            raise EndpointConfigError(f"max_retries must be >= 0, got {self.max_retries}")

    @property
    def api_base(self) -> str:
        """The API root ending in ``/v1``; `base_url` may or may not end in it."""
        base = self.base_url.rstrip("/")
        return base if base.endswith("/v1") else base + "/v1"

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers of every request: the bearer token when an API key is set."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def url(self) -> str:
        """Full URL of the endpoint."""
        return self.api_base + ("/completions" if self.endpoint == "completions"
                                else "/chat/completions")


@dataclass(frozen=True)
class SamplingParams:
    """Generation settings sent with every request (greedy by default, for reproducible evals)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # vLLM extension; load tests use it to fix the output length
    # vLLM extension: the output constraint (e.g. {"regex": ...}), from `Task.output_grammar`
    structured_outputs: dict[str, str] | None = None

    def payload(self) -> dict[str, Any]:
        """The request-body fields for these settings."""
        body: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                                "top_p": self.top_p}
        if self.stop:
            body["stop"] = list(self.stop)
        if self.seed is not None:
            body["seed"] = self.seed
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.structured_outputs is not None:
            body["structured_outputs"] = dict(self.structured_outputs)
        return body


@dataclass(frozen=True)
class RequestOutcome:
    """What happened to one request. Times are seconds; `start_s` is `time.perf_counter()`."""

    ok: bool
    text: str = ""
    error_kind: str | None = None
    error_message: str | None = None
    start_s: float = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: tuple[float, ...] = ()
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    attempts: int = 1
    cached: bool = False

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (E2E - TTFT) / (tokens - 1), as vLLM defines it."""
        if not self.ok or self.cached or self.e2e_s is None or self.ttft_s is None:
            return None
        if not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the derived TPOT."""
        record = asdict(self)
        record["itl_s"] = list(self.itl_s)
        record["tpot_s"] = self.tpot_s
        return record


class _StreamError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class OpenAIClient:
    """Send generation requests with a concurrency limit; use as ``async with``."""

    def __init__(self, config: ClientConfig, cache: GenerationCache | None = None):
        self.config = config
        self.cache = cache
        self._semaphore = asyncio.Semaphore(config.concurrency)
        limits = httpx.Limits(max_connections=config.concurrency + 4,
                              max_keepalive_connections=config.concurrency + 4)
        timeout = httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s)
        self._http = httpx.AsyncClient(headers=config.headers, limits=limits, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    def _body(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, **params.payload(), "stream": True,
                                "stream_options": {"include_usage": True}}
        if self.config.endpoint == "completions":
            if not isinstance(prompt, str):
                raise EndpointConfigError("the completions endpoint takes a prompt string, "
                                          "not chat messages; use the chat endpoint")
            body["prompt"] = prompt
        else:
            body["messages"] = ([{"role": "user", "content": prompt}]
                                if isinstance(prompt, str) else prompt)
        return body

    async def generate(self, prompt: Prompt, params: SamplingParams, *,
                       use_cache: bool = True) -> RequestOutcome:
        """Generate for one prompt; never raises for server or network failures."""
        key = None
        if self.cache is not None and use_cache:
            key = cache_key(self.config.model, self.config.endpoint, prompt, params.payload())
            hit = self.cache.get(key)
            if hit is not None:
                return RequestOutcome(ok=True, cached=True, **hit)
        body = self._body(prompt, params)
        async with self._semaphore:
            outcome = await self._send_with_retries(body)
        if key is not None and outcome.ok:
            self.cache.put(key, {"text": outcome.text, "output_tokens": outcome.output_tokens,
                                 "prompt_tokens": outcome.prompt_tokens,
                                 "finish_reason": outcome.finish_reason})
        return outcome

    async def _send_with_retries(self, body: dict[str, Any]) -> RequestOutcome:
        attempt = 0
        while True:
            attempt += 1
            start = time.perf_counter()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    outcome = await self._stream(body, start)
                return _with_attempts(outcome, attempt)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the server: safe to retry.
                if attempt > self.config.max_retries:
                    return RequestOutcome(ok=False, error_kind="connection_error",
                                          error_message=str(exc) or type(exc).__name__,
                                          start_s=start, attempts=attempt)
                delay = self.config.retry_backoff_s * 2 ** (attempt - 1)
                logger.debug("connection failed (%s), retry %d in %.1fs", exc, attempt, delay)
                await asyncio.sleep(delay)
            except (TimeoutError, httpx.TimeoutException) as exc:
                return RequestOutcome(ok=False, error_kind="timeout",
                                      error_message=f"no complete answer within "
                                                    f"{self.config.timeout_s:g}s ({type(exc).__name__})",
                                      start_s=start, attempts=attempt)
            except _StreamError as exc:
                return RequestOutcome(ok=False, error_kind=exc.kind, error_message=str(exc),
                                      start_s=start, attempts=attempt)
            except httpx.HTTPError as exc:  # the server dropped the connection mid-answer, etc.
                return RequestOutcome(ok=False, error_kind="transport_error",
                                      error_message=f"{type(exc).__name__}: {exc}",
                                      start_s=start, attempts=attempt)

    async def _stream(self, body: dict[str, Any], start: float) -> RequestOutcome:
        chat = self.config.endpoint == "chat"
        pieces: list[str] = []
        ttft = None
        last = start
        itl: list[float] = []
        usage: dict[str, Any] = {}
        finish_reason = None
        content_chunks = 0
        async with self._http.stream("POST", self.config.url, json=body) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")[:300]
                raise _StreamError(f"http_{response.status_code}", detail.strip())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators and SSE comments (pings)
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise _StreamError("bad_response", f"invalid JSON in stream: {data[:100]!r}") from exc
                if "error" in chunk:
                    raise _StreamError("stream_error", json.dumps(chunk["error"])[:300])
                if choices := chunk.get("choices"):
                    now = time.perf_counter()
                    if ttft is None:
                        ttft = now - start
                    else:
                        itl.append(now - last)
                    last = now
                    choice = choices[0]
                    piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if piece:
                        pieces.append(piece)
                        content_chunks += 1
                    finish_reason = choice.get("finish_reason") or finish_reason
                if chunk.get("usage"):
                    usage = chunk["usage"]
        if ttft is None:
            raise _StreamError("empty_response", "the stream ended without any choice chunk")
        return RequestOutcome(
            ok=True, text="".join(pieces), start_s=start, ttft_s=ttft, e2e_s=last - start,
            itl_s=tuple(itl), output_tokens=usage.get("completion_tokens") or content_chunks,
            prompt_tokens=usage.get("prompt_tokens"), finish_reason=finish_reason)


def _with_attempts(outcome: RequestOutcome, attempts: int) -> RequestOutcome:
    if attempts == 1:
        return outcome
    return replace(outcome, attempts=attempts)
