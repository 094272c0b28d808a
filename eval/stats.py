"""Confidence intervals, percentiles and the paired McNemar test used by the reports."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from eval.tasks.scoring import MetricKind

Z_95 = 1.959963984540054
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
# scipy >= 1.15 seeds `bootstrap` with `rng`; older releases (pyproject allows 1.11) only
# with `random_state`; both accept a seeded Generator.
_SEED_KEYWORD = ("rng" if "rng" in inspect.signature(scipy_stats.bootstrap).parameters
                 else "random_state")


@dataclass(frozen=True)
class MetricEstimate:
    """A metric over examples: mean `value` with a 95% interval [`low`, `high`].

    `n` examples were scored; `n_unscorable` were left out (value None); `method` says how
    the interval was computed (``wilson`` for binary metrics, ``bootstrap`` otherwise).
    """

    value: float
    low: float
    high: float
    n: int
    n_unscorable: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sane at 0/n and n/n, unlike Wald).

    scipy's `binomtest(...).proportion_ci(method="wilson")` at the two-sided confidence level
    of `z` (its bounds are exactly 0 at 0/n and 1 at n/n); (0, 1) when n == 0, where scipy
    raises.
    """
    if n == 0:
        return 0.0, 1.0
    confidence = math.erf(z / math.sqrt(2))  # two-sided: P(|Z| < z)
    ci = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=confidence,
                                                          method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(values: Sequence[float], *, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (seeded, so reports are reproducible).

    scipy's `bootstrap` with `method="percentile"`: BCa, its default, warns and gives nan when
    every value is equal (a common case: all scores 0 or all 1), where the percentile interval
    is that value. (0, 1) when empty; the value itself for one value, which scipy refuses.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return 0.0, 1.0
    if data.size == 1:
        return float(data[0]), float(data[0])
    result = scipy_stats.bootstrap((data,), np.mean, n_resamples=resamples, method="percentile",
                                   **{_SEED_KEYWORD: np.random.default_rng(seed)})
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def estimate(values: Sequence[float | None], kind: MetricKind) -> MetricEstimate:
    """Mean of the scorable values with the interval that fits the metric kind."""
    scored = [float(v) for v in values if v is not None]
    n = len(scored)
    mean = sum(scored) / n if n else 0.0
    if kind == "binary":
        low, high = wilson_interval(round(sum(scored)), n)
        method = "wilson"
    else:
        low, high = bootstrap_interval(scored)
        method = "bootstrap"
    return MetricEstimate(value=mean, low=low, high=high, n=n,
                          n_unscorable=len(values) - n, method=method)


@dataclass(frozen=True)
class McNemarResult:
    """Paired comparison of two binary outcomes on the same examples.

    `only_a`: examples A got right and B wrong; `only_b`: the reverse. The p-value is the
    exact two-sided binomial test on the discordant pairs (exact McNemar).
    """

    n_pairs: int
    only_a: int
    only_b: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(a: Sequence[float | None], b: Sequence[float | None]) -> McNemarResult:
    """Exact McNemar test over examples scorable in both runs."""
    if len(a) != len(b):
        raise ValueError(f"paired test needs runs of equal length, got {len(a)} and {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    only_a = sum(1 for x, y in pairs if x >= 0.5 > y)
    only_b = sum(1 for x, y in pairs if y >= 0.5 > x)
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(
        scipy_stats.binomtest(only_a, discordant, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(n_pairs=len(pairs), only_a=only_a, only_b=only_b, p_value=p_value)


def distribution(values: Sequence[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """Mean and p50/p90/p95/p99 of `values` times `scale` (e.g. 1000 for ms); None when empty."""
    if not values:
        return {"n": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}}
    data = np.asarray(values, dtype=float) * scale
    out: dict[str, float | int | None] = {"n": int(data.size), "mean": float(data.mean())}
    for p, value in zip(PERCENTILES, np.percentile(data, PERCENTILES), strict=True):
        out[f"p{p}"] = float(value)
    return out
