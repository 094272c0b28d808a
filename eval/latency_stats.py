"""Aggregate per-request timings into the latency figures of a load level.

Definitions follow vLLM's ``vllm bench serve`` so the two can be compared: TPOT per request
is (E2E - TTFT) / (output tokens - 1) over requests with more than one token; ITL pools the
gaps between stream chunks of all requests; throughput divides by the wall time from the
first request sent to the last one finished. Cached results carry no timing and are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from eval.client import RequestOutcome
from eval.failures import count_failures
from eval.stats import distribution


@dataclass(frozen=True)
class Slo:
    """Service-level objectives in milliseconds; a request is 'good' if it meets all set ones."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise ValueError(f"SLO {name} must be > 0 ms, got {value}")

    def is_set(self) -> bool:
        return any(v is not None for v in asdict(self).values())

    def met_by(self, outcome: RequestOutcome) -> bool:
        """True if a successful request meets every objective (TPOT 0 for 1-token answers)."""
        if not outcome.ok or outcome.ttft_s is None or outcome.e2e_s is None:
            return False
        tpot = outcome.tpot_s or 0.0
        checks = ((self.ttft_ms, outcome.ttft_s), (self.tpot_ms, tpot), (self.e2e_ms, outcome.e2e_s))
        return all(limit is None or seconds * 1000 <= limit for limit, seconds in checks)


def summarise(outcomes: Sequence[RequestOutcome], duration_s: float,
              slo: Slo | None = None) -> dict[str, Any]:
    """Latency distributions (ms), throughput and error counts of one run."""
    timed = [o for o in outcomes if o.ok and not o.cached]
    errors = count_failures(outcomes)
    output_tokens = sum(o.output_tokens or 0 for o in timed)
    summary: dict[str, Any] = {
        "requests": len(outcomes),
        "completed": len(timed),
        "cached": sum(1 for o in outcomes if o.cached),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "duration_s": duration_s,
        "request_throughput": len(timed) / duration_s if duration_s > 0 else None,
        "output_throughput_tok_s": output_tokens / duration_s if duration_s > 0 else None,
        "output_tokens": output_tokens,
        "ttft_ms": distribution([o.ttft_s for o in timed if o.ttft_s is not None], 1000),
        "tpot_ms": distribution([t for o in timed if (t := o.tpot_s) is not None], 1000),
        "itl_ms": distribution([gap for o in timed for gap in o.itl_s], 1000),
        "e2e_ms": distribution([o.e2e_s for o in timed if o.e2e_s is not None], 1000),
    }
    if slo is not None and slo.is_set():
        good = sum(1 for o in timed if slo.met_by(o))
        summary["slo"] = asdict(slo)
        summary["good_requests"] = good
        summary["goodput"] = good / duration_s if duration_s > 0 else None
    return summary
