"""Requests that finally failed (after the client's retries): counted by kind, announced at the
top of every report, and turned into a non-zero exit unless `--max-error-rate` allows them.

A failed request is not a wrong answer: accuracy leaves it out of every metric (it is
*unscored*), latency out of every distribution.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from eval.client import RequestOutcome


def count_failures(outcomes: Iterable[RequestOutcome]) -> dict[str, int]:
    """Failed requests by error kind (``http_500``, ``connection_error``, ...), sorted."""
    counts = Counter(o.error_kind or "unknown" for o in outcomes if not o.ok)
    return dict(sorted(counts.items()))


def describe(by_kind: Mapping[str, int]) -> str:
    """``connection_error 10, http_500 2``."""
    return ", ".join(f"{kind} {count}" for kind, count in by_kind.items())


def failure_notice(failed: int, total: int, by_kind: Mapping[str, int], left_out: str) -> str:
    """The Markdown warning a report opens with when requests failed ('' when none did)."""
    if not failed:
        return ""
    return (f"> **Warning: {failed} of {total} requests failed ({describe(by_kind)}).** "
            f"They are not wrong answers: they are left out of {left_out}.\n")


def check_error_rate(failed: int, total: int, by_kind: Mapping[str, int], max_rate: float,
                     report: Path, outcome: str) -> int:
    """0 if `failed` / `total` is at most `max_rate`; else print one line on stderr naming
    the failures and the flag, and return 1."""
    if not failed or (total and failed / total <= max_rate):
        return 0
    allowed = f"{max_rate:g} allowed" if max_rate else "none allowed"
    print(f"jaxtune: error: {failed} of {total} requests failed ({describe(by_kind)}) and "
          f"{outcome}; {allowed} by --max-error-rate; report: {report}", file=sys.stderr)
    return 1
