"""Resume equivalence: SIGKILL a `jaxtune train` process mid-run, re-run, same losses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.train_jax.train.runs import losses, train_and_sigkill, viggo_slice, write_config
from train_jax.checkpoint import committed_steps
from train_jax.config.run_config import load_run_config
from train_jax.train.loop import train

STEPS = 40


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    return write_config(root / "tiny.yaml", viggo_slice(root, 120),
                        train={"steps": STEPS, "batch_size": 4, "log_every": 1,
                               "progress": False},
                        checkpoint={"every": 5, "keep": 2, "keep_best": 0})


def test_sigkill_and_resume_reproduces_the_uninterrupted_losses(config, tmp_path, caplog):
    # The uninterrupted reference and the resumed run execute in this process (same devices
    # and XLA flags as the subprocess); only the run that gets killed needs its own process.
    reference_dir = tmp_path / "reference"
    train(load_run_config(config, [f"run_dir={reference_dir}"]))
    reference = losses(reference_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    run_dir = tmp_path / "killed"
    killed_at = train_and_sigkill(config, run_dir, 12)
    assert killed_at < STEPS, "the run finished before it could be killed"
    saved = committed_steps(run_dir / "checkpoints")
    assert saved and max(saved) < STEPS

    with caplog.at_level(logging.INFO, logger="train_jax.train.loop"):
        result = train(load_run_config(config, [f"run_dir={run_dir}"]))
    assert result.final_step == STEPS
    assert f"resumed from checkpoint step {max(saved)}" in caplog.text
    assert losses(run_dir) == reference  # bit-identical, every step
