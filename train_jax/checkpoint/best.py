"""The best committed step of a training checkpoint, by the metric the run ranked its steps by.

The trainer records each step's validation metrics and its ranking (`checkpoint.best_metric`,
`checkpoint.best_mode`) in the step's orbax metadata (`custom_metadata`), so a later process
(`jaxtune export --step best`) can pick the step without the run's config or metrics log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train_jax.checkpoint.layout import steps_dir
from train_jax.checkpoint.store import NoCommittedStepError, checkpoint_manager, committed_steps

METRICS_KEY = "metrics"
RANKING_KEY = "ranking"  # {"metric": name, "mode": "min" | "max"}


def step_metadata(metrics: dict[str, Any], best_metric: str, best_mode: str) -> dict[str, Any]:
    """The `custom_metadata` a training step is saved with: its numeric metrics and ranking."""
    numeric = {k: float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {METRICS_KEY: numeric, RANKING_KEY: {"metric": best_metric, "mode": best_mode}}


@dataclass(frozen=True)
class BestStep:
    """The chosen step, its metric value, and every committed step that had the metric."""

    step: int
    metric: str
    mode: str
    value: float
    ranked: tuple[tuple[int, float], ...]

    def describe(self) -> str:
        """One line: which step, by what, out of which."""
        others = ", ".join(f"{s}: {v:.4g}" for s, v in self.ranked)
        return (f"step {self.step}: {'highest' if self.mode == 'max' else 'lowest'} "
                f"{self.metric} = {self.value:.4g} of the committed steps ({others})")


def best_step(ckpt_dir: str | Path) -> BestStep:
    """The committed step with the best recorded ranking metric (ties: the later step)."""
    steps = committed_steps(ckpt_dir)
    if not steps:
        raise NoCommittedStepError(f"{ckpt_dir} has no committed step under {steps_dir(ckpt_dir)}")
    recorded: dict[int, dict[str, Any]] = {}
    with checkpoint_manager(ckpt_dir, read_only=True) as manager:
        for step in steps:
            recorded[step] = dict(manager.metadata(step).custom_metadata or {})
    rankings = {(r[RANKING_KEY]["metric"], r[RANKING_KEY]["mode"])
                for r in recorded.values() if RANKING_KEY in r}
    if not rankings:
        raise NoCommittedStepError(
            f"{ckpt_dir}: no committed step records a ranking metric (saved by an older jaxtune, "
            f"or not by training); choose one by number from {steps}")
    if len(rankings) > 1:
        raise NoCommittedStepError(f"{ckpt_dir}: steps were ranked by different metrics "
                                   f"{sorted(rankings)}; choose one by number from {steps}")
    ((metric, mode),) = rankings
    ranked = tuple((step, float(r[METRICS_KEY][metric])) for step, r in recorded.items()
                   if metric in r.get(METRICS_KEY, {}))
    if not ranked:
        raise NoCommittedStepError(
            f"{ckpt_dir}: none of the committed steps {steps} has {metric} recorded (the run "
            f"ranks by it; was it evaluated at a checkpoint step?); choose one by number")
    sign = 1.0 if mode == "max" else -1.0
    step, value = max(ranked, key=lambda sv: (sign * sv[1], sv[0]))
    return BestStep(step, metric, mode, value, ranked)
