"""The GRPO objective on arrays: group-normalised advantages, the clipped token-level surrogate
and the k3 estimate of the KL divergence to the reference policy. No model in here.

Per completion token t of a sampled completion o with advantage A:

    ratio_t = exp(logp_t - old_logp_t)
    L_t     = -min(ratio_t A, clip(ratio_t, 1 - eps, 1 + eps) A) + kl_coef * k3_t
    k3_t    = exp(ref_logp_t - logp_t) - (ref_logp_t - logp_t) - 1

and the loss is the token-level mean of L_t over every completion token of the batch (DAPO;
Dr. GRPO), not the GRPO paper's mean per sequence then over sequences: a long completion
weighs by its tokens, so a policy is not rewarded for padding out wrong answers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ADVANTAGE_EPS = 1e-4  # keeps (r - mean) / std finite for a group with one distinct reward


def group_advantages(rewards: jax.Array, group_size: int, eps: float = ADVANTAGE_EPS
                     ) -> jax.Array:
    """(r - mean) / (std + eps) within each group of `group_size` consecutive rewards.

    `std` is the sample standard deviation (ddof=1), as in the GRPO reference implementations
    (TRL, DeepSeekMath). A group whose rewards are all equal gets advantage 0 everywhere.
    """
    groups = rewards.reshape(-1, group_size).astype(jnp.float32)
    mean = jnp.mean(groups, axis=1, keepdims=True)
    std = jnp.std(groups, axis=1, keepdims=True, ddof=1)
    return ((groups - mean) / (std + eps)).reshape(rewards.shape)


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Schulman's k3 estimator of KL(policy || reference) per sampled token: non-negative,
    unbiased, and low-variance when the two policies are close."""
    delta = ref_logp - logp
    return jnp.exp(delta) - delta - 1.0


def token_terms(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array,
                advantages: jax.Array, clip_epsilon: float, kl_coef: float
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-token loss L_t, k3 KL and whether the clip zeroed the surrogate's gradient, each
    (..., T); `advantages` is (...,), one per completion."""
    adv = advantages[..., None]
    ratio = jnp.exp(logp - old_logp)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * adv)
    kl = k3_kl(logp, ref_logp)
    clipped = ((ratio < 1 - clip_epsilon) & (adv < 0)) | ((ratio > 1 + clip_epsilon) & (adv > 0))
    return -surrogate + kl_coef * kl, kl, clipped


def loss_sums(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array, mask: jax.Array,
              advantages: jax.Array, clip_epsilon: float, kl_coef: float
              ) -> dict[str, jax.Array]:
    """Masked sums over completion tokens: `loss`, `kl`, `clipped` and `tokens`.

    Sums, not means, so that micro-batches add up; the objective is `loss / tokens` over the
    whole batch (`grpo_loss`).
    """
    loss, kl, clipped = token_terms(logp, old_logp, ref_logp, advantages, clip_epsilon, kl_coef)
    mask = mask.astype(jnp.float32)
    return {"loss": jnp.sum(loss * mask), "kl": jnp.sum(kl * mask),
            "clipped": jnp.sum(clipped * mask), "tokens": jnp.sum(mask)}


def grpo_loss(logp: jax.Array, old_logp: jax.Array, ref_logp: jax.Array, mask: jax.Array,
              advantages: jax.Array, clip_epsilon: float, kl_coef: float) -> jax.Array:
    """The GRPO loss: the token-level mean of L_t over the masked (completion) tokens."""
    sums = loss_sums(logp, old_logp, ref_logp, mask, advantages, clip_epsilon, kl_coef)
    return sums["loss"] / jnp.maximum(sums["tokens"], 1.0)
