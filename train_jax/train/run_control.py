"""What every training loop shares around its steps: the run result, the stop flag that turns
SIGTERM/SIGINT into "save and stop", the wall-clock budget, the resolved config file and the
progress bar.

The supervised loop (`loop.py`) and the objective loops (`grpo/`, `dpo/`) use these, so a run
of any objective stops, saves and reports the same way.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from train_jax.config.run_config import RunConfig, TrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"


@dataclass
class RunResult:
    """How a run ended."""

    final_step: int
    interrupted_by: int | None = None  # the signal number that stopped the run early
    last_loss: float | None = None
    total_steps: int | None = None  # the planned length (train.steps, or from train.epochs)

    @property
    def exit_code(self) -> int:
        return 0 if self.interrupted_by is None else 128 + self.interrupted_by


class StopFlag:
    """Records SIGTERM/SIGINT so the loop can save and stop between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        logger.warning("signal %d: finishing this step, saving a checkpoint, then stopping",
                       signum)
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class TimeBudget:
    """`train.time_budget_minutes` of wall time from construction on (none: never spent)."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.perf_counter):
        self.minutes, self.clock = minutes, clock
        self.started = clock()
        self.seconds = minutes * 60 if minutes else math.inf

    @property
    def deadline(self) -> float:
        """The clock reading at which the budget is spent."""
        return self.started + self.seconds

    def spent(self, step: int) -> bool:
        """True once the budget is used up (logged once, with the step reached)."""
        if self.clock() - self.started <= self.seconds:
            return False
        logger.info("time budget of %.1f min reached at step %d", self.minutes, step)
        return True


def write_resolved_config(cfg: RunConfig, run_dir: Path) -> None:
    """RUN_DIR/config.yaml: the config after overrides, with every default spelled out."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def planned_steps(train_cfg: TrainConfig, train_rows: int) -> int:
    """`train.steps`, or with `train.epochs` the steps that pass over the train rows that often."""
    if train_cfg.epochs is None:
        return train_cfg.steps
    steps = max(1, math.ceil(train_cfg.epochs * train_rows / train_cfg.batch_size))
    logger.info("train.epochs=%g over %d packed rows at batch %d: %d steps", train_cfg.epochs,
                train_rows, train_cfg.batch_size, steps)
    return steps


def progress_bar(enabled: bool, start: int, total: int, desc: str = "train") -> Any:
    """A tqdm bar over steps (None when disabled, e.g. on processes other than 0)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def set_bar_total(bar: Any, total: int) -> None:
    """Show a new step count on `bar` (a `progress_bar`, or None) once the schedule's length
    is fixed or re-fitted."""
    if bar is not None:
        bar.total = total
        bar.refresh()


def report_step(metrics: Any, bar: Any, step: int, values: dict[str, Any],
                shown: tuple[str, ...]) -> None:
    """Log this step's `values` (if any) and advance the progress bar, showing `shown` keys."""
    if values:
        metrics.log(step, values)
        if bar is not None:
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in shown})
    if bar is not None:
        bar.update(1)
