"""The statistics the A/B analysis adds to evergreen.stats: two independent samples (two-proportion z, Welch's t,
the two-sample bootstrap), the always-valid confidence sequence, the minimum sample size, the chi-square
goodness-of-fit test -- each against a reference (scipy, the published formula) or by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from evergreen import stats


def test_welch_t_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 120), rng.normal(0.4, 2.5, 70)
    iv = stats.two_sample_difference(a, b, 0.95)
    ref = ss.ttest_ind(b, a, equal_var=False)
    assert iv.method == "welch_t"
    assert iv.value == pytest.approx(b.mean() - a.mean())
    assert iv.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_two_proportion_z_on_0_1_values():
    a = np.r_[np.ones(300), np.zeros(700)]  # 30%
    b = np.r_[np.ones(250), np.zeros(750)]  # 25%
    iv = stats.two_sample_difference(a, b, 0.95)
    assert iv.method == "two_proportion_z"
    assert iv.value == pytest.approx(-0.05)
    se = math.sqrt(0.3 * 0.7 / 1000 + 0.25 * 0.75 / 1000)
    assert iv.se == pytest.approx(se)
    assert (iv.low, iv.high) == pytest.approx((-0.05 - 1.959964 * se, -0.05 + 1.959964 * se), rel=1e-6)
    # the p-value uses the pooled standard error under "no difference" (the textbook two-proportion z test)
    pooled = 0.275
    z = 0.05 / math.sqrt(pooled * (1 - pooled) * 2 / 1000)
    assert iv.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_two_sample_difference_refuses_tiny_or_bad_samples():
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.two_sample_difference([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.two_sample_difference([1.0, np.nan], [0.0, 1.0])
    flat = stats.two_sample_difference([1.0, 1.0, 1.0], [2.0, 2.0])
    assert flat.se == 0.0  # zero variance is reported, not hidden: the caller says it cannot decide


def test_chi_square_matches_scipy():
    for obs, shares in (([50_500, 49_500], [0.5, 0.5]), ([600, 380], [0.6, 0.4]), ([10, 20, 31], [1, 1, 1])):
        stat, p = stats.chi_square_gof(obs, shares)
        total = sum(obs)
        ref = ss.chisquare(obs, [total * s / sum(shares) for s in shares])
        assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    assert stats.chi_square_gof([50_500, 49_500], [0.5, 0.5])[1] == pytest.approx(0.001565, abs=1e-6)


def test_minimum_sample_size_is_the_textbook_formula():
    # two proportions 0.25 vs 0.23, equal split: (1.96 + 0.8416)^2 (0.1875 + 0.1771) / 0.02^2 per arm
    n = stats.minimum_sample_size(math.sqrt(0.25 * 0.75), math.sqrt(0.23 * 0.77), 0.02)
    per_arm = (1.959964 + 0.841621) ** 2 * (0.1875 + 0.23 * 0.77) / 0.0004
    assert n == pytest.approx(2 * per_arm, rel=1e-4)
    # an unequal split needs more units for the same power
    assert stats.minimum_sample_size(0.4, 0.4, 0.02, share_b=0.2) > stats.minimum_sample_size(0.4, 0.4, 0.02)


def test_confidence_sequence_is_the_published_boundary():
    alpha, tuning, n, se = 0.05, 5000, 12_000, 0.004
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    half = math.sqrt(se * se * n) * math.sqrt(2 * (n * rho2 + 1) * math.log(math.sqrt(n * rho2 + 1) / alpha)
                                              / (n * n * rho2))
    cs = stats.confidence_sequence(0.01, se, n, 0.95, tuning=tuning)
    assert cs.method == "confidence_sequence"
    assert (cs.low, cs.high) == pytest.approx((0.01 - half, 0.01 + half))
    # wider than the fixed-horizon interval at the same n: the price of looking every day
    assert half > 1.959964 * se
    assert stats.confidence_sequence(0.0, se, n, tuning=tuning).p_value == 1.0
    strong = stats.confidence_sequence(0.1, se, n, tuning=tuning)
    assert strong.p_value < 1e-6 and strong.low > 0
    with pytest.raises(ValueError, match="positive"):
        stats.confidence_sequence(0.0, 0.0, n)


def test_confidence_sequence_keeps_its_level_under_daily_looks():
    """Simulated: the true difference is 0; the CS excludes 0 at some of 30 looks at most alpha of the time, while
    30 daily fixed-horizon z tests exclude it far more often."""
    rng = np.random.default_rng(11)
    sims, looks, daily = 2000, 30, 400
    steps = rng.normal(0, 1, (sims, looks)) * math.sqrt(daily)  # sums of unit-variance differences
    n = daily * np.arange(1, looks + 1)
    est, se = np.cumsum(steps, axis=1) / n, 1 / np.sqrt(n)
    cs_hit = np.zeros(sims, bool)
    for k in range(looks):
        for i in range(sims):
            cs = stats.confidence_sequence(float(est[i, k]), float(se[k]), int(n[k]), 0.95, tuning=5000)
            cs_hit[i] |= cs.low > 0 or cs.high < 0
    naive_hit = (np.abs(est / se) > 1.959964).any(axis=1)
    assert cs_hit.mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
    assert naive_hit.mean() > 0.15


def test_bootstrap_two_sample_agrees_with_the_analytic_interval():
    rng = np.random.default_rng(5)
    a = (rng.random(4000) < 0.3).astype(float)
    b = (rng.random(3000) < 0.26).astype(float)
    analytic = stats.two_sample_difference(a, b)
    boot = stats.bootstrap_two_sample(stats.mean_metric, np.zeros(len(a)), a, np.zeros(len(b)), b)
    assert boot.method == "bootstrap_two_sample" and boot.draws == stats.MIN_DRAWS
    assert boot.value == pytest.approx(analytic.value)
    assert boot.low == pytest.approx(analytic.low, abs=0.004) and boot.high == pytest.approx(analytic.high, abs=0.004)
    # seeded: the same inputs give the same interval
    again = stats.bootstrap_two_sample(stats.mean_metric, np.zeros(len(a)), a, np.zeros(len(b)), b)
    assert (again.low, again.high) == (boot.low, boot.high)
