"""The train step: sharded == single device, gradient accumulation == one large batch."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.train_jax.train.helpers import host, random_batch, run_step, setup
from train_jax.config.run_config import MeshConfig, OptimizerConfig


def _max_rel_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)),
                         a, b)
    return max(jax.tree.leaves(diffs))


# Adam's first update is lr * g / (|g| + eps), i.e. sign(g) for the default eps: entries whose
# gradient is ~0 flip sign under any change of summation order (here: the sharded reductions).
# A larger eps keeps the update proportional to the gradient, so the comparison measures the
# sharded computation rather than that amplification.
WELL_CONDITIONED = OptimizerConfig(learning_rate=1e-2, schedule="constant", weight_decay=0.1,
                                   eps=1e-3)


def test_one_step_on_2x2x2_mesh_matches_one_device():
    assert len(jax.devices()) >= 8, "tests/conftest.py sets 8 fake CPU devices"
    batch = random_batch(np.random.default_rng(0), 1, 8, 16)
    shape = (1, 8, 16)
    _, steps1, state1 = setup(MeshConfig(1, 1, 1), jax.devices()[:1], opt=WELL_CONDITIONED)
    before = host(state1["trainable"])
    new1, metrics1 = run_step(steps1, state1, batch, shape)
    _, steps8, state8 = setup(MeshConfig(2, 2, 2), jax.devices()[:8], opt=WELL_CONDITIONED)
    new8, metrics8 = run_step(steps8, state8, batch, shape)

    # The parameters really are split over the mesh.
    q_kernel = new8["trainable"]["layers"][0]["self_attn"]["q_proj"]["kernel"]
    assert q_kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len(q_kernel.addressable_shards) == 8
    assert q_kernel.addressable_shards[0].data.shape == (32, 32)

    loss1, loss8 = float(metrics1["loss"]), float(metrics8["loss"])
    assert abs(loss1 - loss8) / abs(loss1) <= 1e-5
    assert _max_rel_diff(host(new8["trainable"]), host(new1["trainable"])) <= 1e-5
    assert float(metrics8["grad_norm"]) == pytest.approx(float(metrics1["grad_norm"]), rel=1e-5)
    assert int(new8["step"]) == 1
    # The step changed the parameters (otherwise equality would prove nothing).
    assert _max_rel_diff(host(new1["trainable"]), before) > 1e-3


@pytest.mark.parametrize("micro", [4])
def test_gradient_accumulation_equals_large_batch(micro):
    rng = np.random.default_rng(1)
    batch = random_batch(rng, 1, 8, 16)
    split = {k: v.reshape(micro, 8 // micro, 16) for k, v in batch.items()}
    _, steps_a, state_a = setup(MeshConfig(1, 1, 1), jax.devices()[:1], batch_shape=(1, 8, 16),
                                opt=WELL_CONDITIONED)
    new_a, m_a = run_step(steps_a, state_a, batch, (1, 8, 16))
    _, steps_b, state_b = setup(MeshConfig(1, 2, 1), jax.devices()[:2],
                                batch_shape=(micro, 8 // micro, 16), opt=WELL_CONDITIONED)
    new_b, m_b = run_step(steps_b, state_b, split, (micro, 8 // micro, 16))
    assert abs(float(m_a["loss"]) - float(m_b["loss"])) <= 1e-5 * abs(float(m_a["loss"]))
    assert _max_rel_diff(host(new_b["trainable"]), host(new_a["trainable"])) <= 1e-5
