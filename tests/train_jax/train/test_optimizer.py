"""The optimizer chain: global-norm clipping as a scalar scale gives optax's clipped updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train_jax.config.run_config import OptimizerConfig
from train_jax.train.optimizer import (
    build_optimizer,
    clip_by_global_norm,
    decay_mask,
    learning_rate_schedule,
)


def _grads(seed: int) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {"kernel": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
            "scale": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e6])
def test_clip_matches_optax(max_norm):
    grads = _grads(0)
    ours = clip_by_global_norm(max_norm)
    theirs = optax.clip_by_global_norm(max_norm)
    got, _ = ours.update(grads, ours.init(grads))
    want, _ = theirs.update(grads, theirs.init(grads))
    for name in grads:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=0)
    norm = float(optax.global_norm(got))
    assert norm == pytest.approx(min(max_norm, float(optax.global_norm(grads))), rel=1e-6)


def test_below_the_threshold_updates_are_untouched():
    grads = _grads(1)
    clip = clip_by_global_norm(1e6)
    got, _ = clip.update(grads, clip.init(grads))
    for name in grads:
        np.testing.assert_array_equal(got[name], grads[name])


def test_state_is_optax_empty_state_so_old_checkpoints_restore():
    grads = _grads(2)
    ours = clip_by_global_norm(1.0).init(grads)
    theirs = optax.clip_by_global_norm(1.0).init(grads)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)


def test_chain_steps_like_optax_chain_with_optax_clipping():
    cfg = OptimizerConfig(learning_rate=1e-2, schedule="constant", clip_norm=0.5, eps=1e-3)
    schedule = learning_rate_schedule(cfg, 10)
    ours = build_optimizer(cfg, schedule)
    theirs = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                    mask=decay_mask))
    params = _grads(3)
    p_ours, p_theirs = params, params
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    assert jax.tree.structure(s_ours) == jax.tree.structure(s_theirs)
    for step in range(3):
        grads = _grads(10 + step)
        u, s_ours = ours.update(grads, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_theirs = theirs.update(grads, s_theirs, p_theirs)
        p_theirs = optax.apply_updates(p_theirs, u)
    for name in params:
        np.testing.assert_allclose(p_ours[name], p_theirs[name], rtol=1e-5, atol=1e-7)
