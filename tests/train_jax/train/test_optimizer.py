"""The optimizer chain: clipping above the threshold only, AdamW's first step, the decay mask, and
the opt_state layout checkpoints store."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train_jax.config.run_config import OptimizerConfig
from train_jax.train.optimizer import build_optimizer, learning_rate_schedule


def _tree(seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {"kernel": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
            "scale": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}


def _norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                             for x in jax.tree.leaves(tree))))


def _first_step(cfg: OptimizerConfig, grads, params):
    tx = build_optimizer(cfg, learning_rate_schedule(cfg, 10))
    return tx.update(grads, tx.init(params), params)


@pytest.mark.parametrize("norm_over_max", [4.0, 0.25])
def test_clipping_scales_the_gradient_only_above_the_threshold(norm_over_max):
    grads = _tree(0)
    norm = _norm(grads)
    cfg = OptimizerConfig(learning_rate=1e-2, schedule="constant", clip_norm=norm / norm_over_max)
    _, state = _first_step(cfg, grads, _tree(1))
    # After one step Adam's first moment is (1 - b1) times the gradient it was given.
    seen = jax.tree.map(lambda m: m / (1 - cfg.b1), state[1][0].mu)
    scale = min(1.0, 1.0 / norm_over_max)
    for name in grads:
        np.testing.assert_allclose(seen[name], grads[name] * scale, rtol=1e-6, atol=1e-7)
    assert _norm(seen) == pytest.approx(min(norm, cfg.clip_norm), rel=1e-6)


def test_without_clip_norm_large_gradients_pass_unclipped():
    grads = jax.tree.map(lambda g: 1e3 * g, _tree(2))
    cfg = OptimizerConfig(learning_rate=1e-2, schedule="constant", clip_norm=None)
    _, state = _first_step(cfg, grads, _tree(3))
    seen = jax.tree.map(lambda m: m / (1 - cfg.b1), state[0][0].mu)
    for name in grads:
        np.testing.assert_allclose(seen[name], grads[name], rtol=1e-6)


def test_first_step_is_adamw_on_the_clipped_gradient_with_decay_on_matrices_only():
    grads, params = _tree(4), _tree(5)
    cfg = OptimizerConfig(learning_rate=1e-2, schedule="constant", weight_decay=0.1, eps=1e-3,
                          clip_norm=0.5 * _norm(grads))
    updates, _ = _first_step(cfg, grads, params)
    # Bias-corrected first step: m_hat = g and v_hat = g^2, for the clipped g.
    clipped = jax.tree.map(lambda g: 0.5 * g, grads)
    adam = {k: g / (jnp.abs(g) + cfg.eps) for k, g in clipped.items()}
    want = {"kernel": -cfg.learning_rate * (adam["kernel"] + cfg.weight_decay * params["kernel"]),
            "scale": -cfg.learning_rate * adam["scale"]}  # norm scales: no weight decay
    for name in grads:
        np.testing.assert_allclose(updates[name], want[name], rtol=2e-5, atol=1e-9)


def test_opt_state_layout_is_the_one_checkpoints_hold():
    # Checkpoints written with the earlier hand-written clipping hold this layout too: its
    # state, like optax's, was the empty state at index 0.
    params = _tree(6)
    cfg = OptimizerConfig(learning_rate=1e-2, schedule="cosine", clip_norm=1.0)
    state = build_optimizer(cfg, learning_rate_schedule(cfg, 10)).init(params)
    assert state[0] == optax.EmptyState()
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert paths == ["[1][0].count", "[1][0].mu['kernel']", "[1][0].mu['scale']",
                     "[1][0].nu['kernel']", "[1][0].nu['scale']", "[1][2].count"]
