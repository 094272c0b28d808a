"""GRPO with `objective.grpo.rollout: vllm` on the toy task, through `jaxtune train` (which
registers the engine): the reward rises only if every update's weights reach the engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.train_jax.train.grpo_toy import grpo_config
from train_jax.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[3]
# Two `jaxtune train` processes with a vLLM engine each (~2 min on two busy cores): slow. The
# default suite checks the weight reload itself (tests/infra/rollout/test_vllm_weight_push.py).
pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _train(tmp_path: Path, run_dir: Path, **sections) -> subprocess.CompletedProcess:
    cfg = grpo_config(tmp_path, run_dir=str(run_dir),
                      objective={"grpo": {"rollout": "vllm"}}, **sections)
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    return subprocess.run([sys.executable, "-m", "infra.cli", "train", "--config", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def test_vllm_rollouts_learn_the_toy_task_and_repeat_exactly(tmp_path):
    run_dir = tmp_path / "run"
    result = _train(tmp_path, run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vllm rollout engine started" in result.stderr
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 121))
    rewards = np.asarray([r["reward_mean"] for r in rows])
    # A policy whose updates never reached the engine would stay at chance (~1/17).
    assert rewards[:3].mean() < 0.3, rewards[:3]
    assert rewards[-10:].mean() > 0.8, rewards[-10:]
    assert rows[0]["kl"] < 1e-6 and rows[-1]["kl"] > 0

    # Same seed, same samples: the per-row seeds come from the run's rollout key.
    again = tmp_path / "again"
    result = _train(tmp_path, again, train={"steps": 10})
    assert result.returncode == 0, result.stderr[-3000:]
    repeated = read_metrics(again / "metrics.jsonl")
    assert [(r["reward_mean"], r["loss"]) for r in repeated] == \
        [(r["reward_mean"], r["loss"]) for r in rows[:10]]
