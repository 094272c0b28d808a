"""Records of an accuracy run, shared by the suite (`eval.accuracy`) and its report files.

Kept apart from both so the report reads plain records and never imports the suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eval.client import Prompt, RequestOutcome


@dataclass(frozen=True)
class ExampleResult:
    """One evaluated example: what was sent, what came back, how it scored.

    `primary_metric` names the score that says whether the answer is right (``correct``).
    An example whose request failed is *unscored*: no score at all, left out of every metric.
    `scores` also holds the group metrics (e.g. ``execution_match_real_db``: None outside the
    group); `groups` maps a metric with groups to the example's group.
    """

    index: int
    source: str
    prompt: Prompt
    prediction: str
    gold: str
    parsed: str | None
    scores: dict[str, float | None]
    errors: dict[str, str]
    outcome: RequestOutcome
    primary_metric: str
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        """False when the request failed (after retries): the model never answered."""
        return self.outcome.ok

    def to_dict(self) -> dict[str, Any]:
        """The examples.jsonl line of this example (latency without the repeated text)."""
        latency = self.outcome.to_dict()
        latency.pop("text")
        return {"index": self.index, "source": self.source, "prompt": self.prompt,
                "prediction": self.prediction, "gold": self.gold, "parsed": self.parsed,
                "scores": self.scores, "correct": self.scores.get(self.primary_metric),
                "errors": self.errors, "groups": self.groups,
                "unscored": None if self.scored else self.outcome.error_kind or "unknown",
                "request": latency}
