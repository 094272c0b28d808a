"""One HTTP generation request: fan out its choices to the engine, merge their deltas, keep
metrics, abort what is left when the consumer stops, and log one line when it ends."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

import anyio

from serve.admission import Admission, Ticket
from serve.engine import (
    Engine,
    GenerationDelta,
    GenerationRequest,
    SamplingOptions,
    TokenLogprob,
)
from serve.metrics import ServerMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChoiceDelta:
    """New text of choice `index` (prompt p, sample i -> index p * n + i)."""

    index: int
    text: str
    num_new_tokens: int
    finish_reason: str | None
    logprobs: tuple[TokenLogprob, ...] | None = None
    prompt_logprobs: tuple[TokenLogprob, ...] | None = None
    token_ids: tuple[int, ...] = ()


@dataclass
class RunSummary:
    """What a finished run reports in `usage` and in its log line."""

    prompt_tokens: int
    completion_tokens: int = 0
    first_token_s: float | None = None
    latency_s: float = 0.0
    outcome: str = "ok"
    finish_reasons: dict[int, str] = field(default_factory=dict)


class GenerationRun:
    """Generates every choice of one request; iterate `deltas()` exactly once."""

    def __init__(
        self,
        *,
        engine: Engine,
        metrics: ServerMetrics,
        admission: Admission,
        ticket: Ticket,
        model: str,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingOptions,
        n: int,
        arrival: float,
        log_detail: str = "",
    ):
        self._engine, self._metrics, self._admission = engine, metrics, admission
        self._ticket = ticket
        self.request_id = ticket.request_id
        self.model = model
        self._arrival = arrival
        self._log_detail = log_detail
        self.summary = RunSummary(prompt_tokens=sum(len(p) for p in prompts))
        self._requests: list[tuple[int, GenerationRequest]] = []
        for p, ids in enumerate(prompts):
            for i in range(n):
                index = p * n + i
                seed = None if sampling.seed is None else sampling.seed + i
                opts = sampling if seed == sampling.seed else replace(sampling, seed=seed)
                rid = f"{self.request_id}-{index}"
                self._requests.append((index, GenerationRequest(rid, model, tuple(ids), opts)))
        self._unfinished = {req.request_id for _, req in self._requests}
        self._last_token_at: dict[str, float] = {}
        self._started = False
        self._closed = False

    @property
    def num_choices(self) -> int:
        return len(self._requests)

    def prompt_of(self, index: int) -> tuple[int, ...]:
        """The prompt token ids of choice `index`."""
        return self._requests[index][1].prompt_token_ids

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Every choice's deltas as they come; on early exit the engine requests are aborted."""
        if self._started or self._closed:
            raise RuntimeError("GenerationRun.deltas() can be iterated only once")
        self._started = True
        self._ticket.engine_ids.update(self._unfinished)
        try:
            if len(self._requests) == 1:
                index, req = self._requests[0]
                # aclosing: if our consumer stops early, the engine's generator is closed now
                # (running its own cleanup), not whenever it is garbage collected.
                async with aclosing(self._engine.generate(req)) as stream:
                    async for delta in stream:
                        yield self._account(index, req.request_id, delta)
            else:
                async for index, rid, delta in self._merged():
                    yield self._account(index, rid, delta)
        except (asyncio.CancelledError, GeneratorExit):
            self.summary.outcome = "aborted"
            raise
        except BaseException:
            self.summary.outcome = "error"
            raise
        finally:
            await self._finish()

    def _account(self, index: int, rid: str, delta: GenerationDelta) -> ChoiceDelta:
        now = time.monotonic()
        k = delta.num_new_tokens
        if k:
            if self.summary.first_token_s is None:
                self.summary.first_token_s = now - self._arrival
                self._metrics.ttft.labels(self.model).observe(self.summary.first_token_s)
            last = self._last_token_at.get(rid)
            hist = self._metrics.inter_token.labels(self.model)
            # One observation per token after a request's first, so the count always equals
            # generation tokens minus requests. Tokens that came in one delta (a loaded engine,
            # or text held back mid-character) share the gap since the previous delta; those
            # arriving with the first token came at no interval after it.
            gap = (now - last) / k if last is not None else 0.0
            for _ in range(k if last is not None else k - 1):
                hist.observe(gap)
            self._last_token_at[rid] = now
            self.summary.completion_tokens += k
        if delta.finish_reason is not None:
            self._unfinished.discard(rid)
            self.summary.finish_reasons[index] = delta.finish_reason
            if delta.finish_reason == "abort":
                self.summary.outcome = "aborted"
        return ChoiceDelta(index, delta.text, k, delta.finish_reason, delta.logprobs,
                           delta.prompt_logprobs, delta.token_ids)

    async def _merged(self) -> AsyncIterator[tuple[int, str, GenerationDelta]]:
        queue: asyncio.Queue[tuple[int, str, GenerationDelta | BaseException | None]] = \
            asyncio.Queue()

        async def pump(index: int, req: GenerationRequest) -> None:
            try:
                async with aclosing(self._engine.generate(req)) as stream:
                    async for delta in stream:
                        queue.put_nowait((index, req.request_id, delta))
                queue.put_nowait((index, req.request_id, None))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
                queue.put_nowait((index, req.request_id, exc))

        tasks = [asyncio.create_task(pump(i, r)) for i, r in self._requests]
        remaining = len(tasks)
        try:
            while remaining:
                index, rid, item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield index, rid, item
        finally:
            for task in tasks:
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Release the run if it never started or has not cleaned up yet (idempotent)."""
        if not self._closed:
            if not self._started:
                self.summary.outcome = "aborted"
            await self._finish()

    async def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded: when the client disconnects this runs inside a cancelled scope, and the
        # aborts must still reach the engine.
        with anyio.CancelScope(shield=True):
            for rid in list(self._unfinished):
                await self._engine.abort(rid)
            if self._unfinished and self.summary.outcome == "ok":
                self.summary.outcome = "aborted"
            self._unfinished.clear()
            self._admission.release(self._ticket)
        s = self.summary
        s.latency_s = time.monotonic() - self._arrival
        self._metrics.e2e.labels(self.model).observe(s.latency_s)
        self._metrics.prompt_tokens.labels(self.model).inc(s.prompt_tokens)
        self._metrics.generation_tokens.labels(self.model).inc(s.completion_tokens)
        ttft = f"{s.first_token_s * 1000:.0f}ms" if s.first_token_s is not None else "-"
        logger.info("%s model=%s outcome=%s choices=%d prompt_tokens=%d completion_tokens=%d "
                    "ttft=%s latency=%.3fs%s", self.request_id, self.model, s.outcome,
                    self.num_choices, s.prompt_tokens, s.completion_tokens, ttft, s.latency_s,
                    self._log_detail)
