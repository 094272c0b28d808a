"""Per-example scores shared by every task scorer.

A task (`eval.tasks.task.Task`) declares its metrics (`metrics`) and returns one
`ExampleScore` per prediction. A metric value is 1.0/0.0 for binary metrics, a float in
[0, 1] for mean metrics, or None when the example cannot be scored for that metric (e.g.
the gold SQL query itself does not execute): such examples are left out of that metric's
denominator and counted separately.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

MetricKind = Literal["binary", "mean"]


@dataclass(frozen=True)
class Metric:
    """A metric of a task: `binary` metrics get a Wilson interval, `mean` ones a bootstrap one."""

    name: str
    kind: MetricKind
    description: str


@dataclass(frozen=True)
class ExampleScore:
    """Scores of one prediction.

    `values` maps metric name to value (None = not scorable); `parsed` is the answer the
    parser extracted from the model output (None if none); `errors` maps a metric name to
    the kind of failure that made it wrong (e.g. ``{"execution_match": "no_such_column"}``).
    """

    values: Mapping[str, float | None]
    parsed: str | None
    errors: Mapping[str, str] = field(default_factory=dict)
