"""Training checkpoints: keep the last K plus the best by a metric; restore exactly."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from train_jax.config.run_config import CheckpointConfig
from train_jax.train.checkpointing import TrainCheckpointer


def _state(step: int, value: float):
    return {"step": jnp.int32(step),
            "trainable": {"layers": {0: {"kernel": jnp.full((2, 3), value)}}},
            "frozen": {"norm": {"scale": jnp.ones(3)}},
            "opt_state": ({"layers": {0: {"kernel": jnp.full((2, 3), -value)}}}, jnp.int32(step))}


def test_keeps_last_and_best_and_restores(tmp_path):
    cfg = CheckpointConfig(every=1, keep=1, keep_best=1, best_metric="val_loss", best_mode="min",
                           async_save=True)
    saver = TrainCheckpointer(tmp_path / "ckpt", cfg)
    for step, val in ((1, 3.0), (2, 1.0), (3, 2.0), (4, None)):
        saver.save(_state(step, float(step)), {"position": step}, {"run": "x"},
                   {} if val is None else {"val_loss": val})
    saver.wait()
    assert saver.manager.all_steps() == [2, 4]  # best val_loss (step 2) + the latest
    state, data_state = saver.restore(2, _state(0, 0.0))
    saver.close()
    assert data_state == {"position": 2} and int(state["step"]) == 2
    np.testing.assert_array_equal(state["trainable"]["layers"][0]["kernel"], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(state["opt_state"][0]["layers"][0]["kernel"],
                                  np.full((2, 3), -2.0))
    assert int(state["opt_state"][1]) == 2
