"""The GRPO objective and advantages against a numpy reference on fixed inputs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from train_jax.train.grpo.objective import (
    ADVANTAGE_EPS,
    group_advantages,
    grpo_loss,
    k3_kl,
    loss_sums,
)

EPS, KL_COEF = 0.2, 0.05


def _np_advantages(rewards: np.ndarray, group: int) -> np.ndarray:
    out = np.empty_like(rewards, dtype=np.float64)
    for start in range(0, len(rewards), group):
        r = rewards[start:start + group].astype(np.float64)
        out[start:start + group] = (r - r.mean()) / (r.std(ddof=1) + ADVANTAGE_EPS)
    return out


def _np_loss(logp, old, ref, mask, adv) -> dict[str, float]:
    total, kl_sum, clipped, count = 0.0, 0.0, 0, 0
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            ratio = np.exp(logp[b, t] - old[b, t])
            a = adv[b]
            surrogate = min(ratio * a, min(max(ratio, 1 - EPS), 1 + EPS) * a)
            kl = np.exp(ref[b, t] - logp[b, t]) - (ref[b, t] - logp[b, t]) - 1
            total += -surrogate + KL_COEF * kl
            kl_sum += kl
            clipped += int((ratio > 1 + EPS and a > 0) or (ratio < 1 - EPS and a < 0))
            count += 1
    return {"loss": total / count, "kl": kl_sum / count, "clipped": clipped, "tokens": count}


def test_group_advantages_match_numpy_and_zero_variance_groups_get_zero():
    rewards = np.array([1, 0, 0, 1, 0.5, 0.5, 0.5, 0.5, 0, 0, 0, 1, 2, -1, 0.25, 3], np.float32)
    got = np.asarray(group_advantages(jnp.asarray(rewards), 4))
    np.testing.assert_allclose(got, _np_advantages(rewards, 4), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[4:8], 0.0)
    # Each group's advantages sum to zero; ordering within a group follows the rewards.
    np.testing.assert_allclose(got.reshape(4, 4).sum(axis=1), 0.0, atol=1e-5)
    assert got[12 + 3] > got[12] > got[12 + 2] > got[12 + 1]


def test_clipped_objective_kl_and_clip_fraction_match_numpy():
    rng = np.random.default_rng(0)
    b, t = 6, 9
    old = rng.normal(-2.0, 0.7, (b, t)).astype(np.float32)
    logp = (old + rng.normal(0.0, 0.4, (b, t))).astype(np.float32)  # ratios on both sides of the clip
    ref = (old + rng.normal(0.0, 0.3, (b, t))).astype(np.float32)
    mask = rng.random((b, t)) < 0.7
    mask[:, 0] = True
    adv = rng.normal(0.0, 1.0, b).astype(np.float32)
    expected = _np_loss(logp, old, ref, mask, adv)
    assert 0 < expected["clipped"] < expected["tokens"]  # the clip is exercised, not everywhere

    args = tuple(map(jnp.asarray, (logp, old, ref, mask, adv)))
    loss = float(grpo_loss(*args, EPS, KL_COEF))
    sums = {k: float(v) for k, v in loss_sums(*args, EPS, KL_COEF).items()}
    np.testing.assert_allclose(loss, expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(sums["kl"] / sums["tokens"], expected["kl"], rtol=1e-5)
    assert sums["clipped"] == expected["clipped"]
    assert sums["tokens"] == expected["tokens"]


def test_k3_is_zero_at_equal_policies_and_positive_elsewhere():
    logp = jnp.asarray([-1.0, -2.0, -0.5])
    np.testing.assert_allclose(np.asarray(k3_kl(logp, logp)), 0.0, atol=1e-7)
    assert np.all(np.asarray(k3_kl(logp, logp + jnp.asarray([0.3, -0.3, 1.0]))) > 0)


def test_on_policy_gradient_is_advantage_weighted_log_likelihood():
    # With old == current log-probs and no KL, d loss / d logp_t = -A / tokens on every
    # completion token (the policy-gradient estimator), and 0 on masked tokens.
    import jax

    logp = jnp.asarray([[-1.0, -2.0, -3.0], [-0.5, -0.7, -0.9]])
    mask = jnp.asarray([[1, 1, 0], [1, 1, 1]], jnp.float32)
    adv = jnp.asarray([1.5, -0.5])
    grad = jax.grad(lambda lp: grpo_loss(lp, jax.lax.stop_gradient(lp), lp, mask, adv, EPS, 0.0)
                    )(logp)
    expected = -np.asarray(adv)[:, None] * np.asarray(mask) / 5.0
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-6)
