"""Intervals, percentiles and McNemar against known values."""

import pytest

from eval import stats


def test_wilson_matches_the_textbook_value():
    # 8/10 successes: the Wilson 95% interval worked out by hand is [0.490, 0.943].
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)


def test_wilson_at_the_edges_stays_inside_0_1_and_is_not_degenerate():
    low, high = stats.wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = stats.wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 0.9


def test_wilson_with_no_examples_is_the_whole_range():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_edge_cases_keep_the_percentile_interval(recwarn):
    assert stats.bootstrap_interval([]) == (0.0, 1.0)
    assert stats.bootstrap_interval([0.25]) == (0.25, 0.25)
    # All equal (every score 0, or 1): the interval is the value; BCa would warn and give nan.
    assert stats.bootstrap_interval([1.0] * 7) == (1.0, 1.0)
    assert not recwarn.list


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.1 * (i % 7) for i in range(40)]
    low, high = stats.bootstrap_interval(values, seed=3)
    assert low < sum(values) / len(values) < high
    assert stats.bootstrap_interval(values, seed=3) == (low, high)
    assert stats.bootstrap_interval(values, seed=4) != (low, high)


def test_estimate_skips_unscorable_and_picks_method():
    binary = stats.estimate([1.0, 0.0, None, 1.0], "binary")
    assert (binary.value, binary.n, binary.n_unscorable, binary.method) == (2 / 3, 3, 1, "wilson")
    mean = stats.estimate([0.5, 1.0, 0.0, 0.5], "mean")
    assert mean.method == "bootstrap"
    assert mean.low <= mean.value == 0.5 <= mean.high
    assert stats.estimate([0.5, 1.0, 0.0, 0.5], "mean") == mean  # seeded


def test_mcnemar_counts_discordant_pairs_and_gives_exact_p():
    a = [1.0] * 10 + [0.0] * 10 + [1.0, None]
    b = [1.0] * 10 + [1.0] * 10 + [0.0, 1.0]
    result = stats.mcnemar(a, b)
    assert (result.n_pairs, result.only_a, result.only_b) == (21, 1, 10)
    # Exact two-sided binomial: 2 * P(X <= 1 | n=11, p=0.5) = 2 * 12 / 2048.
    assert result.p_value == pytest.approx(24 / 2048)
    assert stats.mcnemar([1.0, 0.0], [1.0, 0.0]).p_value == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar([1.0], [1.0, 0.0])


def test_distribution_percentiles():
    d = stats.distribution([0.001 * i for i in range(1, 101)], scale=1000)
    assert d["n"] == 100
    assert d["mean"] == pytest.approx(50.5)
    assert d["p50"] == pytest.approx(50.5)
    assert d["p99"] == pytest.approx(99.01)
    assert stats.distribution([])["p50"] is None
