"""GRPO end to end on the toy verifiable task ("reply with the digit shown"): the reward rises;
a scorer that raises is counted and does not stop the run; LoRA's reference is the base."""

from __future__ import annotations

import numpy as np

from tests.train_jax.train.grpo_toy import grpo_config
from train_jax.config.run_config import run_config_from_dict
from train_jax.train.loop import train
from train_jax.train.metrics import read_metrics

METRIC_KEYS = {"loss", "kl", "clip_fraction", "grad_norm", "lr", "reward_mean", "reward_std",
               "zero_std_groups", "reward_errors", "response_length"}


def test_mean_reward_rises_from_chance_to_above_0_8(tmp_path):
    run_dir = tmp_path / "run"
    result = train(run_config_from_dict(grpo_config(tmp_path, run_dir=str(run_dir))))
    assert result.final_step == 120
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 121))
    assert METRIC_KEYS <= rows[0].keys()
    rewards = np.asarray([r["reward_mean"] for r in rows])
    assert rewards[:3].mean() < 0.3, rewards[:3]
    assert rewards[-10:].mean() > 0.8, rewards[-10:]
    assert rows[0]["kl"] < 1e-6  # the policy is the reference until the first update
    assert rows[-1]["kl"] > 0
    assert (run_dir / "reward_curve.png").stat().st_size > 0
    assert (run_dir / "loss_curve.png").stat().st_size > 0


def test_raising_reward_is_counted_and_lora_starts_at_its_reference(tmp_path):
    run_dir = tmp_path / "run"
    cfg = grpo_config(tmp_path, run_dir=str(run_dir), train={"steps": 4},
                      method={"name": "lora", "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0,
                                                       "targets": ["q_proj", "v_proj"]}},
                      objective={"grpo": {"task": "tests.train_jax.train.grpo_toy:FLAKY"}})
    result = train(run_config_from_dict(cfg))
    assert result.final_step == 4 and result.interrupted_by is None
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert sum(r["reward_errors"] for r in rows) > 0  # "7" answers raised, scored 0
    # LoRA's reference is the model with its adapters off: equal to the policy at the start
    # (B = 0), apart from it once the adapters have trained.
    assert rows[0]["kl"] < 1e-6
    assert rows[-1]["kl"] > 0


def test_dynamic_sampling_trains_on_groups_whose_rewards_differ(tmp_path):
    # At the start the toy policy is right ~1 time in 17, so most groups of 8 all score 0.
    run_dir = tmp_path / "run"
    cfg = grpo_config(tmp_path, run_dir=str(run_dir), train={"steps": 6},
                      objective={"grpo": {"dynamic_sampling_rounds": 4}})
    assert train(run_config_from_dict(cfg)).final_step == 6
    rows = read_metrics(run_dir / "metrics.jsonl")
    rounds = np.asarray([r["rollout_rounds"] for r in rows])
    sampled = np.asarray([r["zero_std_groups"] for r in rows])
    kept = np.asarray([r["kept_zero_std_groups"] for r in rows])
    assert rounds.max() > 1 and rounds.max() <= 4
    assert (kept <= sampled + 1e-9).all() and kept.mean() < sampled.mean()
    # A step that stopped before its last round found enough informative groups.
    assert (kept[rounds < 4] == 0).all()
    # Each round draws fresh prompts: 8 per round.
    assert rows[-1]["epoch"] == round(8 * rounds.sum() / 40, 4)
