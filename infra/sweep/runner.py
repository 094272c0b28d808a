"""Running sweep trials one after another, scoring them, keeping the best checkpoint."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infra.pipeline.processes import jaxtune_command, run_logged
from infra.pipeline.stages import Stage, StageRunner
from infra.sweep.grid import Trial

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepSettings:
    """A sweep: the base config, its fixed overrides, the trials, and how to score them."""

    config: Path
    out_dir: Path
    trials: tuple[Trial, ...]
    base_overrides: tuple[str, ...] = ()
    metric: str | None = None  # default: the config's checkpoint.best_metric
    mode: Literal["min", "max"] | None = None  # default: the config's checkpoint.best_mode
    keep_all: bool = False


def trial_config(settings: SweepSettings, trial: Trial, run_dir: Path):
    """The validated run config of `trial` (raises ConfigError naming a bad key)."""
    from train_jax.config.run_config import load_run_config

    return load_run_config(settings.config, [*settings.base_overrides, *trial.override_args(),
                                             f"run_dir={run_dir}"])


def read_metric(metrics_path: Path, metric: str, mode: str) -> tuple[float | None, int | None]:
    """(best value of `metric` in a run's metrics.jsonl, the step it was logged at)."""
    best: tuple[float | None, int | None] = (None, None)
    if not metrics_path.is_file():
        return best
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        value = row.get(metric)
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best[0] is None or (value < best[0] if mode == "min" else value > best[0]):
            best = (float(value), row.get("step"))
    return best


class Sweep:
    """Runs the trials of `settings` (resumable: finished trials are skipped)."""

    def __init__(self, settings: SweepSettings):
        self.s = settings
        self.root = settings.out_dir.resolve()
        self.runner = StageRunner(self.root)
        first = trial_config(settings, settings.trials[0], self.trial_dir(settings.trials[0]))
        self.metric = settings.metric or first.checkpoint.best_metric
        self.mode = settings.mode or first.checkpoint.best_mode
        for trial in settings.trials[1:]:  # fail before any training if one trial is invalid
            trial_config(settings, trial, self.trial_dir(trial))

    def trial_dir(self, trial: Trial) -> Path:
        """Run directory of `trial`."""
        return self.root / "trials" / trial.name

    def _run_trial(self, trial: Trial) -> dict[str, Any]:
        run_dir = self.trial_dir(trial)
        argv = jaxtune_command("train", "--config", str(self.s.config), *self.s.base_overrides,
                               *trial.override_args(), f"run_dir={run_dir}")
        run_logged(argv, self.root / "logs" / f"{trial.name}.log")
        value, step = read_metric(run_dir / "metrics.jsonl", self.metric, self.mode)
        if value is None:
            raise ValueError(f"trial {trial.name} logged no {self.metric!r}: set eval.every "
                             f"(and eval.task_samples for a task metric) so trials are scored")
        return {"run_dir": str(run_dir), "overrides": dict(trial.overrides),
                "metric": self.metric, "value": value, "step": step}

    def run(self) -> dict[str, Any]:
        """Run every unfinished trial, then write results.json, sweep.md and sweep.png."""
        stages = [Stage(trial.name, f"trial {trial.index + 1}/{len(self.s.trials)}: "
                        + " ".join(trial.override_args()), lambda t=trial: self._run_trial(t))
                  for trial in self.s.trials]
        outputs = self.runner.run_all(stages)
        rows = [outputs[t.name] | {"trial": t.name} for t in self.s.trials]
        best = (min if self.mode == "min" else max)(rows, key=lambda r: r["value"])
        if not self.s.keep_all:
            self._drop_checkpoints(rows, best)
        summary = {"metric": self.metric, "mode": self.mode, "trials": rows, "best": best,
                   "best_checkpoint": str(Path(best["run_dir"]) / "checkpoints")}
        (self.root / "results.json").write_text(json.dumps(summary, indent=2))
        self._write_table(summary)
        self._plot(summary)
        return summary

    def _drop_checkpoints(self, rows: list[dict[str, Any]], best: dict[str, Any]) -> None:
        # Checkpoints dominate a sweep's disk use; only the winner's is worth keeping.
        for row in rows:
            steps = Path(row["run_dir"]) / "checkpoints" / "steps"
            if row is not best and steps.is_dir():
                shutil.rmtree(steps)
                logger.info("removed checkpoints of %s (not the best trial)", row["trial"])

    def _write_table(self, summary: dict[str, Any]) -> None:
        keys = list(summary["trials"][0]["overrides"])
        head = ["trial", *keys, summary["metric"], "at step"]
        lines = [f"# Sweep: best {summary['metric']} ({summary['mode']})", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in summary["trials"]:
            mark = " **best**" if row["trial"] == summary["best"]["trial"] else ""
            cells = [row["trial"] + mark, *(str(row["overrides"][k]) for k in keys),
                     f"{row['value']:.4f}", str(row["step"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"Best checkpoint: `{summary['best_checkpoint']}`",
                  f"Export it: `jaxtune export --checkpoint {summary['best_checkpoint']} --out DIR`", ""]
        (self.root / "sweep.md").write_text("\n".join(lines))

    def _plot(self, summary: dict[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["trials"]
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows)), 4))
        colors = ["tab:green" if r["trial"] == summary["best"]["trial"] else "tab:blue" for r in rows]
        ax.bar(range(len(rows)), [r["value"] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)),
                      ["\n".join(f"{k.split('.')[-1]}={v}" for k, v in r["overrides"].items())
                       for r in rows], fontsize=8)
        ax.set_ylabel(f"{summary['metric']} ({summary['mode']} is better)")
        ax.set_title("jaxtune sweep: validation score per trial")
        fig.tight_layout()
        fig.savefig(self.root / "sweep.png", dpi=120)
        plt.close(fig)
