"""Training on one small batch over and over drives its loss close to zero."""

from __future__ import annotations

import jax
import numpy as np

from tests.train_jax.train.helpers import random_batch, run_step, setup
from train_jax.config.run_config import MeshConfig, OptimizerConfig


def test_overfitting_a_tiny_dataset():
    shape = (1, 4, 16)
    batch = random_batch(np.random.default_rng(0), *shape)
    opt = OptimizerConfig(learning_rate=1e-2, schedule="constant", warmup_steps=0)
    _, steps, state = setup(MeshConfig(1, 2, 1), jax.devices()[:2], opt=opt, batch_shape=shape)
    losses = []
    for _ in range(150):
        state, metrics = run_step(steps, state, batch, shape)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 4.0  # ~ln(256) for random token ids
    assert losses[-1] < 0.05, losses[-10:]
