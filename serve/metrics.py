"""Prometheus metrics of one server instance (each app owns its own registry).

Exposed at GET /metrics:
- ``jaxtune_http_requests_total{endpoint,status}``
- ``jaxtune_time_to_first_token_seconds``, ``jaxtune_inter_token_latency_seconds``,
  ``jaxtune_e2e_request_latency_seconds`` histograms ``{model}``
- ``jaxtune_prompt_tokens_total``, ``jaxtune_generation_tokens_total`` counters ``{model}``
- ``jaxtune_requests_in_flight``: generation requests admitted by the HTTP layer, not finished
- ``jaxtune_engine_requests_running`` / ``jaxtune_engine_requests_waiting``: the engine
  scheduler's own counts, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serve.engine import EngineLoad

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0)
_TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5,
                      5.0)


class _EngineLoadCollector(Collector):
    """Reads the engine's running/waiting counts when Prometheus scrapes."""

    def __init__(self) -> None:
        self.source: Callable[[], EngineLoad] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        load = self.source() if self.source is not None else EngineLoad(0, 0)
        yield GaugeMetricFamily("jaxtune_engine_requests_running",
                                "Sequences the engine scheduler is generating", value=load.running)
        yield GaugeMetricFamily("jaxtune_engine_requests_waiting",
                                "Sequences queued in the engine scheduler", value=load.waiting)


class ServerMetrics:
    """All metrics of one app, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("jaxtune_http_requests", "HTTP requests by endpoint and "
                                     "status", ["endpoint", "status"], registry=r)
        self.ttft = Histogram("jaxtune_time_to_first_token_seconds", "Time from request "
                              "arrival to the first generated token", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("jaxtune_inter_token_latency_seconds", "Time between "
                                     "consecutive generated tokens of one sequence", ["model"],
                                     buckets=_TOKEN_GAP_BUCKETS, registry=r)
        self.e2e = Histogram("jaxtune_e2e_request_latency_seconds", "Time from request arrival "
                             "to its last token", ["model"], buckets=_LATENCY_BUCKETS,
                             registry=r)
        self.prompt_tokens = Counter("jaxtune_prompt_tokens", "Prompt tokens processed",
                                     ["model"], registry=r)
        self.generation_tokens = Counter("jaxtune_generation_tokens", "Tokens generated",
                                         ["model"], registry=r)
        self.in_flight = Gauge("jaxtune_requests_in_flight", "Generation requests admitted and "
                               "not yet finished", registry=r)
        self._engine_load = _EngineLoadCollector()
        r.register(self._engine_load)

    def watch_engine(self, source: Callable[[], EngineLoad] | None) -> None:
        """Report `source()` as the engine running/waiting gauges (None: report zeros)."""
        self._engine_load.source = source

    def render(self) -> bytes:
        return generate_latest(self.registry)
