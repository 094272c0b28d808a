"""Load generator: streaming requests at fixed concurrency levels or seeded Poisson arrival rates.

A level is either closed-loop (`concurrency` requests in flight, the next sent as one ends,
no rate) or open-loop (`rate` requests/s with exponential gaps from a seeded generator,
optionally capped at `concurrency` in flight), as ``vllm bench serve`` does with
``--max-concurrency`` and ``--request-rate``. Warm-up requests run first at the same level
and are excluded from the measurement.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from eval.client import ClientConfig, OpenAIClient, RequestOutcome, SamplingParams

_WORDS = ("the", "model", "answers", "a", "question", "about", "games", "and", "numbers",
          "with", "care", "while", "servers", "stream", "tokens", "quickly")


class LoadConfigError(ValueError):
    """A load setting is invalid; the message names it."""


@dataclass(frozen=True)
class LoadLevel:
    """One point of the load sweep: in-flight cap and/or arrival rate (None = unbounded)."""

    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency is None and self.rate is None:
            raise LoadConfigError("a load level needs a concurrency, a rate, or both")
        if self.concurrency is not None and self.concurrency < 1:
            raise LoadConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise LoadConfigError(f"rate must be > 0 requests/s, got {self.rate}")

    @property
    def label(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"c={self.concurrency}")
        if self.rate is not None:
            parts.append(f"rate={self.rate:g}/s")
        return " ".join(parts)


@dataclass(frozen=True)
class LevelRun:
    """Measured requests of one level (warm-up excluded) and the wall time they took."""

    level: LoadLevel
    outcomes: tuple[RequestOutcome, ...]
    duration_s: float
    warmup_requests: int


def synthetic_prompts(count: int, words: int, seed: int) -> list[str]:
    """`count` seeded random prompts of `words` words (a fixed load, independent of tokenizers)."""
    if words < 1:
        raise LoadConfigError(f"prompt length must be >= 1 word, got {words}")
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(count)]


def prompts_from_file(path: str | Path) -> list[str]:
    """Prompts from a JSONL file with a ``prompt`` field (the format ``vllm bench serve
    --dataset-name custom`` reads, so both tools can replay the same load)."""
    prompts = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoadConfigError(f"{path}:{line_no}: malformed JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise LoadConfigError(f"{path}:{line_no}: expected an object with a string 'prompt'")
            prompts.append(row["prompt"])
    if not prompts:
        raise LoadConfigError(f"{path}: no prompts")
    return prompts


def arrival_gaps(count: int, rate: float | None, seed: int) -> list[float]:
    """Seconds to wait before each request: 0 for closed loop, else exponential (Poisson)."""
    if rate is None:
        return [0.0] * count
    rng = random.Random(seed)
    return [rng.expovariate(rate) for _ in range(count)]


async def _fire(client: OpenAIClient, prompts: Sequence[str], params: SamplingParams,
                gaps: Sequence[float], bar: tqdm | None) -> list[RequestOutcome]:
    async def one(prompt: str) -> RequestOutcome:
        outcome = await client.generate(prompt, params, use_cache=False)
        if bar is not None:
            bar.update(1)
        return outcome

    tasks = []
    for prompt, gap in zip(prompts, gaps, strict=True):
        if gap:
            await asyncio.sleep(gap)
        tasks.append(asyncio.create_task(one(prompt)))
    return list(await asyncio.gather(*tasks))


async def run_level(client_config: ClientConfig, prompts: Sequence[str], params: SamplingParams,
                    level: LoadLevel, *, num_requests: int, warmup: int, seed: int,
                    progress: bool = True) -> LevelRun:
    """Warm up, then send `num_requests` prompts (cycled from `prompts`) at `level`."""
    if num_requests < 1:
        raise LoadConfigError(f"number of requests must be >= 1, got {num_requests}")
    if warmup < 0:
        raise LoadConfigError(f"warm-up requests must be >= 0, got {warmup}")
    in_flight = level.concurrency or num_requests
    config = replace(client_config, concurrency=in_flight)
    order = list(prompts)
    random.Random(seed).shuffle(order)
    chosen = [order[i % len(order)] for i in range(num_requests)]
    async with OpenAIClient(config) as client:
        if warmup:
            warm = [order[i % len(order)] for i in range(warmup)]
            await _fire(client, warm, params, [0.0] * warmup, None)
        bar = tqdm(total=num_requests, desc=f"load {level.label}", unit="req", disable=not progress)
        start = time.perf_counter()
        try:
            outcomes = await _fire(client, chosen, params,
                                   arrival_gaps(num_requests, level.rate, seed), bar)
        finally:
            bar.close()
        duration = time.perf_counter() - start
    return LevelRun(level=level, outcomes=tuple(outcomes), duration_s=duration,
                    warmup_requests=warmup)
