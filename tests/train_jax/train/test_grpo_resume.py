"""GRPO resume equivalence: SIGKILL a `jaxtune train` GRPO process after a checkpoint was
committed, re-run, and get the uninterrupted run's rewards and losses (the checkpoint carries
the prompt cursor and the sampling key, so the same completions are drawn)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from tests.train_jax.train.grpo_toy import grpo_config
from tests.train_jax.train.runs import train_and_sigkill
from train_jax.checkpoint import committed_steps
from train_jax.config.run_config import load_run_config
from train_jax.train.loop import train
from train_jax.train.metrics import read_metrics

STEPS = 60


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grpo_resume")
    cfg = grpo_config(root, train={"steps": STEPS}, checkpoint={"every": 5, "keep": 2,
                                                                "keep_best": 0})
    path = root / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _sequences(run_dir: Path) -> dict[int, tuple[float, float]]:
    return {r["step"]: (r["reward_mean"], r["loss"])
            for r in read_metrics(run_dir / "metrics.jsonl")}


def test_sigkill_and_resume_reproduce_rewards_and_losses(config, tmp_path, caplog):
    reference_dir = tmp_path / "reference"
    train(load_run_config(config, [f"run_dir={reference_dir}"]))
    reference = _sequences(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert len({reward for reward, _ in reference.values()}) > 5  # rewards really vary

    run_dir = tmp_path / "killed"
    killed_at = train_and_sigkill(config, run_dir, 12, once_checkpointed=True)
    assert killed_at < STEPS, "the run finished before it could be killed"
    saved = committed_steps(run_dir / "checkpoints")
    assert saved and max(saved) < STEPS

    with caplog.at_level(logging.INFO, logger="train_jax.train.grpo.loop"):
        result = train(load_run_config(config, [f"run_dir={run_dir}"]))
    assert result.final_step == STEPS
    assert f"resumed from checkpoint step {max(saved)}" in caplog.text
    assert _sequences(run_dir) == reference  # bit-identical rewards and losses, every step
