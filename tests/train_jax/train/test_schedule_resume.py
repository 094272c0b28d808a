"""Time-budgeted runs end to end on a tiny model with a fake clock: the length is fixed after
the timed steps, the run ends on its decay at that length, and a run stopped after the fix and
resumed (on a clock that would now estimate another length) follows the same rates. DPO fixes
its length the same way."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.train_jax.train.runs import REPO, viggo_slice, write_config
from train_jax.config.run_config import load_run_config
from train_jax.train import loop
from train_jax.train.loop import train
from train_jax.train.optimizer import learning_rate_schedule

CAP = 40


class TickClock:
    """Advances `tick` seconds at every reading: a run's timings depend only on its code path."""

    def __init__(self, tick: float):
        self.tick, self.now = tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    return write_config(root / "tiny.yaml", viggo_slice(root, 60),
                        optimizer={"learning_rate": 3e-3, "schedule": "wsd", "warmup_steps": 2,
                                   "min_lr_ratio": 0.1, "decay_fraction": 0.3},
                        train={"steps": CAP, "batch_size": 4, "log_every": 1,
                               "progress": False, "time_budget_minutes": 0.5,
                               "budget_probe_steps": 3, "peak_tflops_per_device": 1.0},
                        checkpoint={"every": 3, "keep": 2, "keep_best": 0})


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two tiny runs, ~35 s on the shared CPU; the plan logic's unit tests are fast
def test_budget_fixes_the_length_and_a_resumed_run_keeps_it(config, tmp_path, monkeypatch):
    # Stop with SIGTERM inside the decay (the checkpoint then holds the fixed length), resume
    # on a clock five times faster, on which re-estimating would give a much longer run.
    run_dir, report, stop_at = tmp_path / "run", loop.report_step, []

    def report_then_stop(metrics, bar, step, values, shown):
        report(metrics, bar, step, values, shown)
        if "schedule_decay_start" in values:
            stop_at.append(values["schedule_decay_start"] + 1)
        if stop_at and step == stop_at[0]:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(loop, "report_step", report_then_stop)
    stopped = train(load_run_config(config, [f"run_dir={run_dir}"]), clock=TickClock(0.5))
    assert stopped.final_step == stop_at[0] and stopped.interrupted_by == signal.SIGTERM
    monkeypatch.setattr(loop, "report_step", report)
    resumed = train(load_run_config(config, [f"run_dir={run_dir}"]), clock=TickClock(0.1))

    rows = _rows(run_dir)
    fixed = [r for r in rows if "schedule_total_steps" in r]
    assert len(fixed) == 1 and fixed[0]["step"] == 4  # after the compiling step and 3 timed
    total, decay_start = fixed[0]["schedule_total_steps"], fixed[0]["schedule_decay_start"]
    assert 4 < decay_start < stopped.final_step < total < CAP  # the budget set the length
    assert resumed.final_step == resumed.total_steps == total
    # Every step's rate is the fixed plan's, before and after the stop: what an uninterrupted
    # run that fixed this length gives.
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert sorted(lrs) == list(range(1, total + 1))
    schedule = learning_rate_schedule(load_run_config(config).optimizer, total, decay_start)
    np.testing.assert_allclose([lrs[s] for s in range(1, total + 1)],
                               [float(schedule(s - 1)) for s in range(1, total + 1)], rtol=1e-6)
    assert lrs[total] < lrs[decay_start] == pytest.approx(3e-3)  # it ended on the decay


@pytest.mark.slow  # one tiny DPO run, ~20 s on the shared CPU
def test_a_dpo_run_fixes_its_length_from_the_budget_too(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    lines = (REPO / "data" / "viggo" / "preference_train.jsonl").read_text().splitlines()
    pairs.write_text("".join(line + "\n" for line in lines[:48]))
    path = write_config(tmp_path / "dpo.yaml", pairs,
                        optimizer={"learning_rate": 1e-3, "schedule": "cosine",
                                   "warmup_steps": 1, "min_lr_ratio": 0.1},
                        train={"steps": CAP, "batch_size": 4, "log_every": 1, "progress": False,
                               "time_budget_minutes": 0.4, "budget_probe_steps": 2,
                               "peak_tflops_per_device": 1.0},
                        objective={"name": "dpo"},
                        checkpoint={"every": 50, "keep": 1, "keep_best": 0})
    path.write_text(path.read_text().replace("task: viggo", "task: preference")
                    .replace("max_length: 128", "max_length: 192"))
    cfg = load_run_config(path, [f"run_dir={tmp_path / 'run'}"])
    result = train(cfg, clock=TickClock(0.5))
    rows = _rows(tmp_path / "run")
    fixed = [r for r in rows if "schedule_total_steps" in r]
    assert len(fixed) == 1 and fixed[0]["step"] == 3
    total, decay_start = fixed[0]["schedule_total_steps"], fixed[0]["schedule_decay_start"]
    assert decay_start == 3 < total == result.final_step < CAP  # cosine from the fix step
    lrs = [r["lr"] for r in rows if "lr" in r]
    schedule = learning_rate_schedule(cfg.optimizer, total, decay_start)
    np.testing.assert_allclose(lrs, [float(schedule(i)) for i in range(total)], rtol=1e-6)


class SlowingClock(TickClock):
    """A TickClock whose steps get `factor` times slower after `reads` readings: what a probe
    of the first steps cannot see (host-heap trims, a busier machine)."""

    def __init__(self, tick: float, reads: int, factor: float):
        super().__init__(tick)
        self.reads, self.factor = reads, factor

    def __call__(self) -> float:
        self.reads -= 1
        if self.reads == 0:
            self.tick *= self.factor
        return super().__call__()


def test_steps_slower_than_the_probe_refit_the_length_and_the_run_still_ends_decayed(
        config, tmp_path):
    # The probe times ~2 s steps; from the ~30th clock reading on they take twice as long.
    # The length fixed from the probe would overrun the 60 s budget and be cut mid-decay; the
    # re-fits at the checkpoints (every 3 steps, no evaluations) shorten it in time.
    run_dir = tmp_path / "run"
    cfg = load_run_config(config, [f"run_dir={run_dir}", "train.time_budget_minutes=1.0"])
    result = train(cfg, clock=SlowingClock(0.5, reads=30, factor=2.0))
    rows = _rows(run_dir)
    plans = [(r["step"], r["schedule_total_steps"], r["schedule_decay_start"])
             for r in rows if "schedule_total_steps" in r]
    assert len(plans) >= 2 and plans[0][0] == 4
    assert plans[-1][1] < plans[0][1]  # shortened after the fix
    total, decay_start = plans[-1][1], plans[-1][2]
    assert result.final_step == result.total_steps == total  # not cut by the budget
    # Every step ran at the final plan's rate, those taken under the earlier plans included,
    # and the last one on the decayed end of it.
    lrs = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert sorted(lrs) == list(range(1, total + 1))
    schedule = learning_rate_schedule(cfg.optimizer, total, decay_start)
    np.testing.assert_allclose([lrs[s] for s in range(1, total + 1)],
                               [float(schedule(s - 1)) for s in range(1, total + 1)], rtol=1e-6)
    assert lrs[total] < 0.2 * lrs[decay_start] == pytest.approx(0.2 * 3e-3)
