"""The length the learning-rate schedule spans: fixed once per run, logged, and kept in every
checkpoint so that a resumed run follows the same rates.

The length comes from `train.steps`, from `train.epochs` (the steps of that many passes), or,
with `train.time_budget_minutes`, from the measured times of the run's first steps
(`budget_probe.py`). Until those are timed the run trains on a "probe" plan: warm-up, then the
peak rate, which is what every length's schedule does at those steps once its decay start is
placed at or after them. Then the length is fixed (`budget_plan`) and the decay placed so that
it ends inside the budget. A fixed plan is stored beside the data position in each checkpoint's
`data_state` (`PlannedState`) and reused on resume, never re-estimated.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from train_jax.config.run_config import OptimizerConfig, RunConfig
from train_jax.train.optimizer import default_decay_start

logger = logging.getLogger(__name__)

PLAN_KEY = "lr_schedule"  # the key of the plan in a checkpoint's data_state
PlanSource = Literal["steps", "epochs", "budget", "probe"]
_SOURCES = ("steps", "epochs", "budget", "probe")


@dataclass(frozen=True)
class SchedulePlan:
    """Where the schedule ends (`total_steps`) and where its decay starts (`decay_start`)."""

    total_steps: int
    decay_start: int
    source: PlanSource
    fixed_at: int = 0  # the step the length was fixed at (0: before training)

    @property
    def is_fixed(self) -> bool:
        """False while a time-budgeted run is still timing its first steps."""
        return self.source != "probe"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> SchedulePlan:
        """The plan stored in a checkpoint (`to_dict` output)."""
        try:
            plan = cls(int(raw["total_steps"]), int(raw["decay_start"]), raw["source"],
                       int(raw.get("fixed_at", 0)))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"checkpoint data_state.{PLAN_KEY} is malformed: {raw!r}") from None
        if plan.source not in _SOURCES:
            raise ValueError(f"checkpoint data_state.{PLAN_KEY}.source {plan.source!r} is none "
                             f"of {', '.join(_SOURCES)}")
        return plan

    def metrics(self) -> dict[str, int]:
        """What metrics.jsonl (and so an export's provenance) records of the plan."""
        return {"schedule_total_steps": self.total_steps,
                "schedule_decay_start": self.decay_start}

    def describe(self, opt: OptimizerConfig) -> str:
        """One line: the schedule, its length and where that came from, its phases."""
        name = opt.schedule + (f" ({opt.decay_shape} decay)" if opt.schedule == "wsd" else "")
        warmup = f"warm-up {opt.warmup_steps} steps, " if opt.warmup_steps else ""
        if not self.is_fixed:
            return (f"lr schedule: {name}, length to be fixed from the time budget after the "
                    f"first steps are timed; {warmup}peak {opt.learning_rate:g} until then")
        origin = {"steps": "train.steps", "epochs": "train.epochs",
                  "budget": f"fixed at step {self.fixed_at} to end within the time budget"}
        head = f"lr schedule: {name} over {self.total_steps} steps ({origin[self.source]}): "
        if opt.schedule == "constant":
            return f"{head}{warmup}then {opt.learning_rate:g}"
        final = opt.learning_rate * opt.min_lr_ratio
        return (f"{head}{warmup}peak {opt.learning_rate:g} until step {self.decay_start}, "
                f"decaying to {final:g} at step {self.total_steps}")


def configured_plan(cfg: RunConfig, planned_total: int) -> SchedulePlan:
    """The plan of `train.steps` or `train.epochs` (`planned_total`) alone."""
    source: PlanSource = "epochs" if cfg.train.epochs is not None else "steps"
    return SchedulePlan(planned_total, default_decay_start(cfg.optimizer, planned_total), source)


def probes_budget(cfg: RunConfig, planned_total: int, start_step: int = 0) -> bool:
    """Whether the run fixes its length from timed steps: a time budget, a schedule whose rates
    depend on the length, and room for the timed steps before `planned_total` (the cap)."""
    return (cfg.train.time_budget_minutes is not None and cfg.optimizer.schedule != "constant"
            and planned_total > start_step + cfg.train.budget_probe_steps + 1)


def starting_plan(cfg: RunConfig, planned_total: int, start_step: int = 0) -> SchedulePlan:
    """The plan a run starts (or resumes without a stored plan) with."""
    if probes_budget(cfg, planned_total, start_step):
        return SchedulePlan(planned_total, planned_total, "probe")
    return configured_plan(cfg, planned_total)


def budget_plan(opt: OptimizerConfig, total_steps: int, fixed_at: int) -> SchedulePlan:
    """The plan fixed at step `fixed_at` for `total_steps`: the decay never starts before
    `fixed_at`, so the rates of the steps already taken are this plan's too."""
    start = max(default_decay_start(opt, total_steps), fixed_at)
    return SchedulePlan(total_steps, start, "budget", fixed_at)


def resumed_plan(cfg: RunConfig, planned_total: int, start_step: int,
                 stored: SchedulePlan | None) -> SchedulePlan:
    """The plan of a run resumed at `start_step` whose checkpoint stored `stored`.

    A length fixed from the time budget is kept as stored (so the rates continue exactly as in
    an uninterrupted run) as long as the config still sets a budget; otherwise the config's own
    plan applies, as it always did for `train.steps` and `train.epochs`.
    """
    if stored is not None and stored.source == "budget" and \
            cfg.train.time_budget_minutes is not None:
        return stored
    plan = starting_plan(cfg, planned_total, start_step)
    if stored is not None and stored != plan:
        logger.warning("the checkpoint's lr schedule (%d steps, decay from step %d, from %s) "
                       "differs from this config's; following the config", stored.total_steps,
                       stored.decay_start, stored.source)
    return plan


class _Stateful(Protocol):
    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class PlannedState:
    """A data feed's checkpoint state with the run's fixed plan beside it (`PLAN_KEY`).

    `get_state` adds the plan once it is fixed; `set_state` takes it out again (`restored`)
    before handing the rest to the feed, so feeds never see it.
    """

    def __init__(self, inner: _Stateful, plan: SchedulePlan):
        self.inner, self.plan = inner, plan
        self.restored: SchedulePlan | None = None
        self._logged: SchedulePlan | None = None

    def unlogged_metrics(self) -> dict[str, int]:
        """The plan's `metrics()` once per fixed plan, unless the resumed run's metrics file
        already holds them (the plan was restored); otherwise {}."""
        if not self.plan.is_fixed or self.plan in (self._logged, self.restored):
            return {}
        self._logged = self.plan
        return self.plan.metrics()

    def get_state(self) -> dict[str, Any]:
        state = dict(self.inner.get_state())
        if self.plan.is_fixed:
            state[PLAN_KEY] = self.plan.to_dict()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop(PLAN_KEY, None)
        self.restored = None if raw is None else SchedulePlan.from_dict(raw)
        self.inner.set_state(state)
