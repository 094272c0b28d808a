"""The DPO objective on sequence log-probabilities (Rafailov et al. 2023; IPO: Azar et al. 2023).

With pi the policy, ref the frozen reference, y_w the chosen and y_l the rejected completion,
and h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]:

- ``sigmoid`` (DPO): -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h); eps is
  `label_smoothing`, the assumed rate of flipped labels (conservative DPO, eps = 0 is DPO).
- ``ipo``: (h - 1 / (2 beta))^2; its target margin already regularises, so label smoothing
  does not apply.

The implicit rewards are beta (log pi(y) - log ref(y)); a pair counts as preferred (accuracy)
when the chosen reward is strictly above the rejected one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

LossType = Literal["sigmoid", "ipo"]


@dataclass(frozen=True)
class PairTerms:
    """Per-pair values (P,) of one batch: the loss and the implicit rewards."""

    losses: jax.Array
    chosen_rewards: jax.Array
    rejected_rewards: jax.Array


def dpo_losses(policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array,
               ref_rejected: jax.Array, *, beta: float, loss: LossType = "sigmoid",
               label_smoothing: float = 0.0) -> PairTerms:
    """Per-pair DPO (or IPO) losses and rewards from summed completion log-probs, each (P,)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        losses = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
                  - label_smoothing * jax.nn.log_sigmoid(-beta * h))
    elif loss == "ipo":
        losses = jnp.square(h - 1.0 / (2.0 * beta))
    else:
        raise ValueError(f"unknown DPO loss {loss!r}; expected sigmoid or ipo")
    return PairTerms(losses, beta * jax.lax.stop_gradient(chosen_ratio),
                     beta * jax.lax.stop_gradient(rejected_ratio))
