"""The inter-token latency histogram counts every token after a request's first, however the
engine groups tokens into deltas (a loaded engine, or text held back mid-character)."""

from __future__ import annotations

import time

import pytest

from serve.admission import Ticket
from serve.engine import GenerationDelta, SamplingOptions
from serve.generation import GenerationRun
from serve.metrics import ServerMetrics


def _gap_count(metrics: ServerMetrics) -> float:
    return metrics.registry.get_sample_value(
        "jaxtune_inter_token_latency_seconds_count", {"model": "m"}) or 0.0


@pytest.mark.parametrize("groups", [(1, 1, 1, 1), (3, 1), (1, 3), (2, 2), (4,)])
def test_every_token_after_the_first_is_one_gap(groups):
    metrics = ServerMetrics()
    run = GenerationRun(engine=None, metrics=metrics, admission=None, ticket=Ticket("r"),
                        model="m", prompts=[[1, 2]], sampling=SamplingOptions(max_tokens=8),
                        n=1, arrival=time.monotonic())
    for k in groups:
        run._account(0, "r-0", GenerationDelta("x" * k, k))
    assert _gap_count(metrics) == sum(groups) - 1
    assert run.summary.completion_tokens == sum(groups)
