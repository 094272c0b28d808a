"""`train.epochs` decides the run length from the prepared data."""

import pytest

from train_jax.config.loading import ConfigError
from train_jax.config.run_config import TrainConfig
from train_jax.train.loop import planned_steps


def test_steps_come_from_epochs_when_set() -> None:
    assert planned_steps(TrainConfig(steps=100), train_rows=1000) == 100
    assert planned_steps(TrainConfig(epochs=1, batch_size=8), train_rows=1000) == 125
    assert planned_steps(TrainConfig(epochs=2.5, batch_size=8), train_rows=1001) == 313
    assert planned_steps(TrainConfig(epochs=0.001, batch_size=8), train_rows=10) == 1


@pytest.mark.parametrize("epochs", [0, -1.0])
def test_non_positive_epochs_are_rejected(epochs: float) -> None:
    with pytest.raises(ConfigError, match="train.epochs must be > 0"):
        TrainConfig(epochs=epochs)
