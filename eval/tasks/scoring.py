"""Per-example scores shared by every task scorer.

A task (`eval.tasks.task.Task`) declares its metrics (`metrics`) and returns one
`ExampleScore` per prediction. A metric value is 1.0/0.0 for binary metrics, a float in
[0, 1] for mean metrics, or None when the example cannot be scored for that metric (e.g.
the gold SQL query itself does not execute): such examples are left out of that metric's
denominator and counted separately.

A metric may declare `groups`: the example kinds its value is also reported for apart (SQL
execution match: on a real database or on synthetic ones). Each score then names its
example's group, and reports add one metric per group (`group_metric_name`) over the examples
of that group only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

MetricKind = Literal["binary", "mean"]


@dataclass(frozen=True)
class Metric:
    """A metric of a task: `binary` metrics get a Wilson interval, `mean` ones a bootstrap one.

    `groups` (optional) names the kinds of example the metric is also reported for apart.
    """

    name: str
    kind: MetricKind
    description: str
    groups: tuple[str, ...] = ()


def group_metric_name(metric: str, group: str) -> str:
    """The name reports give `metric` restricted to the examples of `group`."""
    return f"{metric}_{group}"


@dataclass(frozen=True)
class ExampleScore:
    """Scores of one prediction.

    `values` maps metric name to value (None = not scorable); `parsed` is the answer the
    parser extracted from the model output (None if none); `errors` maps a metric name to
    the kind of failure that made it wrong (e.g. ``{"execution_match": "no_such_column"}``);
    `groups` maps a metric that declares groups to this example's group (one of them).
    """

    values: Mapping[str, float | None]
    parsed: str | None
    errors: Mapping[str, str] = field(default_factory=dict)
    groups: Mapping[str, str] = field(default_factory=dict)
