"""Learning-rate schedule shapes against a plain numpy reference, the schedules of runs without a
budget bit for bit as before, and the config checks of the schedule keys."""

from __future__ import annotations

import math

import numpy as np
import optax
import pytest

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import OptimizerConfig, TrainConfig
from train_jax.train.optimizer import default_decay_start, learning_rate_schedule
from train_jax.train.run_control import planned_steps


def reference_lr(cfg: OptimizerConfig, total: int, decay_start: int, count: int) -> float:
    """The rate of update `count` (0-based), written out from the documented formulas."""
    peak, warmup, ratio = cfg.learning_rate, cfg.warmup_steps, cfg.min_lr_ratio
    final = peak * ratio
    if count < warmup:
        return peak * count / warmup
    if cfg.schedule == "constant" or count < decay_start:
        return peak
    x = min((count - decay_start) / max(total - decay_start, 1), 1.0)
    shape = cfg.decay_shape if cfg.schedule == "wsd" else cfg.schedule
    if shape == "linear":
        return peak + (final - peak) * x
    if shape == "cosine":
        return peak * ((1 - ratio) * 0.5 * (1 + math.cos(math.pi * x)) + ratio)
    return final + (peak - final) * (1 - math.sqrt(x))  # 1-sqrt


def _values(schedule: optax.Schedule, n: int) -> np.ndarray:
    return np.asarray([float(schedule(i)) for i in range(n)])


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("warmup", [0, 5])
def test_wsd_is_warmup_then_peak_then_the_decay_shape_over_the_last_fraction(shape, warmup):
    cfg = OptimizerConfig(learning_rate=3e-4, schedule="wsd", warmup_steps=warmup,
                          min_lr_ratio=0.1, decay_fraction=0.2, decay_shape=shape)
    total = 50
    assert default_decay_start(cfg, total) == 40  # the last 20% of 50 steps decay
    got = _values(learning_rate_schedule(cfg, total), total + 3)
    want = [reference_lr(cfg, total, 40, i) for i in range(total + 3)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    assert got[39] == pytest.approx(3e-4) and got[total] == pytest.approx(3e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "wsd"])
def test_a_later_decay_start_holds_the_peak_until_then(schedule):
    cfg = OptimizerConfig(learning_rate=1e-3, schedule=schedule, warmup_steps=3,
                          min_lr_ratio=0.05, decay_shape="cosine")
    total, start = 30, 12
    got = _values(learning_rate_schedule(cfg, total, decay_start=start), total + 2)
    want = [reference_lr(cfg, total, start, i) for i in range(total + 2)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def _schedule_before_wsd(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    # The construction jaxtune used before `wsd` and decay starts existed, verbatim.
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    final = peak * cfg.min_lr_ratio
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, final, decay_steps)
    else:
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 20])
def test_runs_without_a_budget_keep_their_schedule_bit_for_bit(schedule, warmup):
    cfg = OptimizerConfig(learning_rate=1e-4, schedule=schedule, warmup_steps=warmup,
                          min_lr_ratio=0.1)
    total = 400
    np.testing.assert_array_equal(_values(learning_rate_schedule(cfg, total), total + 2),
                                  _values(_schedule_before_wsd(cfg, total), total + 2))


def test_an_epochs_run_decays_to_the_final_rate_at_the_end_of_its_last_epoch():
    train = TrainConfig(epochs=2.0, batch_size=4)
    total = planned_steps(train, train_rows=30)  # 2 x 30 rows / 4 per batch
    assert total == 15
    cfg = OptimizerConfig(learning_rate=1e-3, schedule="wsd", min_lr_ratio=0.0,
                          decay_fraction=0.4, decay_shape="linear")
    lrs = _values(learning_rate_schedule(cfg, total), total + 1)
    assert default_decay_start(cfg, total) == 9
    assert lrs[8] == pytest.approx(1e-3) and 0 < lrs[total - 1] < lrs[9]
    assert lrs[total] == 0.0  # the decay's end is the last epoch's end


def test_wsd_decay_never_starts_inside_warmup():
    cfg = OptimizerConfig(schedule="wsd", warmup_steps=9, decay_fraction=1.0)
    assert default_decay_start(cfg, 10) == 9


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_decay_fraction_outside_zero_to_one_is_refused(bad):
    with pytest.raises(ConfigError, match=r"optimizer.decay_fraction must be in \(0, 1\]"):
        OptimizerConfig(schedule="wsd", decay_fraction=bad)


def test_schedule_keys_are_checked_by_name():
    from train_jax.config.loading import build

    assert build(OptimizerConfig, {"schedule": "wsd", "decay_fraction": 1.0,
                                   "decay_shape": "1-sqrt"}, "optimizer").schedule == "wsd"
    with pytest.raises(ConfigError, match="optimizer.decay_shape must be one of linear, "
                                          "cosine, 1-sqrt"):
        build(OptimizerConfig, {"decay_shape": "exp"}, "optimizer")
    with pytest.raises(ConfigError, match="train.budget_probe_steps must be >= 1"):
        TrainConfig(budget_probe_steps=0)
