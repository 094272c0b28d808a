"""The DPO and IPO losses against the formulas, written out in numpy on fixed log-probs."""

from __future__ import annotations

import numpy as np
import pytest

from train_jax.train.dpo.loss import dpo_losses

# Summed completion log-probs of four pairs: policy and reference, chosen and rejected.
PC = np.array([-10.0, -4.0, -7.5, -20.0])
PR = np.array([-12.0, -3.0, -7.5, -15.0])
RC = np.array([-11.0, -4.5, -8.0, -18.0])
RR = np.array([-11.0, -2.0, -7.0, -16.0])


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_sigmoid_loss_is_conservative_dpo(beta, smoothing):
    h = (PC - RC) - (PR - RR)  # [2, 1.5, 1, -3]
    expected = (-(1 - smoothing) * _log_sigmoid(beta * h) - smoothing * _log_sigmoid(-beta * h))
    terms = dpo_losses(PC, PR, RC, RR, beta=beta, loss="sigmoid", label_smoothing=smoothing)
    np.testing.assert_allclose(np.asarray(terms.losses), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(terms.chosen_rewards), beta * (PC - RC), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(terms.rejected_rewards), beta * (PR - RR), rtol=1e-6)


def test_sigmoid_values_by_hand():
    # beta 1, h = 2 for the first pair: -log sigmoid(2) = log(1 + e^-2) = 0.126928...
    terms = dpo_losses(PC[:1], PR[:1], RC[:1], RR[:1], beta=1.0)
    assert float(terms.losses[0]) == pytest.approx(0.1269280, abs=1e-6)
    # Label smoothing 0.25 mixes in -log sigmoid(-2) = 2.126928...: 0.75 * 0.126928 + 0.25 * 2.126928
    smooth = dpo_losses(PC[:1], PR[:1], RC[:1], RR[:1], beta=1.0, label_smoothing=0.25)
    assert float(smooth.losses[0]) == pytest.approx(0.6269280, abs=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_ipo_loss_is_the_squared_distance_to_half_over_beta(smoothing):
    beta = 0.25
    h = (PC - RC) - (PR - RR)
    terms = dpo_losses(PC, PR, RC, RR, beta=beta, loss="ipo", label_smoothing=smoothing)
    # IPO's target margin 1 / (2 beta) = 2 regularises by itself: smoothing does not apply.
    np.testing.assert_allclose(np.asarray(terms.losses), (h - 2.0) ** 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(terms.losses), [0.0, 0.25, 1.0, 25.0], rtol=1e-6)


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="unknown DPO loss"):
        dpo_losses(PC, PR, RC, RR, beta=0.1, loss="hinge")
