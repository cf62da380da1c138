"""The one statistics module: DeLong against brute force and the explicit covariance, coverage by simulation,
the bootstrap's determinism and draw floor, and the dispatchers against scikit-learn."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from evergreen import stats
from evergreen.stats import (
    MIN_DRAWS,
    Interval,
    PairedEstimate,
    auc_delong,
    auc_delong_paired,
    bootstrap,
    bootstrap_paired,
    metric_interval,
    metric_value,
    midranks,
    paired_difference,
    proportion_interval,
    weighted_metric,
)

PHI = NormalDist().cdf


def _placements(y, s):
    """Brute-force O(m n) Mann-Whitney kernel: psi(x, y) = 1, 1/2, 0 for x >, =, < y; its row and column means."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


def _binormal(rng, m, n, shift, rounding=None):
    y = np.r_[np.ones(m, int), np.zeros(n, int)]
    s = rng.normal(size=m + n) + shift * y
    return y, (np.round(s, rounding) if rounding is not None else s)


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


@pytest.mark.parametrize("rounding", [None, 1])  # continuous scores, and heavy ties
def test_delong_matches_brute_force_placements(rounding):
    rng = np.random.default_rng(1)
    y, s = _binormal(rng, 23, 31, 0.8, rounding)
    auc, v10, v01 = _placements(y, s)
    var = v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)
    got = auc_delong(y, s, 0.9)
    assert got.value == pytest.approx(auc, abs=1e-12) == pytest.approx(roc_auc_score(y, s))
    assert got.se == pytest.approx(math.sqrt(var), rel=1e-10)
    z = NormalDist().inv_cdf(0.95)
    assert (got.low, got.high) == pytest.approx((auc - z * math.sqrt(var), auc + z * math.sqrt(var)))
    assert (got.n, got.method, got.confidence) == (54, "delong", 0.9)


def test_paired_delong_variance_is_the_explicit_covariance_formula():
    rng = np.random.default_rng(2)
    y, s_a = _binormal(rng, 17, 29, 0.7, 1)
    s_b = np.round(0.6 * s_a + rng.normal(size=len(y)) + 0.5 * y, 1)
    auc_a, v10_a, v01_a = _placements(y, s_a)
    auc_b, v10_b, v01_b = _placements(y, s_b)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov(np.vstack([v10_a, v10_b])), np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / m + s01 / n
    var_d = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    got = auc_delong_paired(y, s_a, s_b, 0.95)
    assert (got.a.value, got.b.value) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert (got.a.se, got.b.se) == pytest.approx((math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])), rel=1e-10)
    d = got.difference
    assert d.value == pytest.approx(auc_b - auc_a, abs=1e-12)
    assert d.se == pytest.approx(math.sqrt(var_d), rel=1e-10)
    assert d.p_value == pytest.approx(math.erfc(abs(auc_b - auc_a) / math.sqrt(var_d) / math.sqrt(2)))
    assert d.method == "delong_paired" and d.low < d.value < d.high


def test_paired_delong_of_a_model_with_itself_is_exactly_zero():
    rng = np.random.default_rng(3)
    y, s = _binormal(rng, 40, 60, 1.0)
    d = auc_delong_paired(y, s, s).difference
    assert (d.value, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_delong_coverage_by_simulation():
    """400 binormal samples of 80 + 120 rows: the true AUC is Phi(shift / sqrt 2); a 95% interval covers it in
    about 95% of samples (the simulation's standard error is 1.1 points)."""
    rng = np.random.default_rng(20261101)
    shift = 1.0
    truth = PHI(shift / math.sqrt(2))
    covered = sum(auc_delong(*_binormal(rng, 80, 120, shift)).contains(truth) for _ in range(400))
    assert 0.915 <= covered / 400 <= 0.985, covered


def test_paired_delong_coverage_by_simulation():
    """Two correlated binormal models (noise correlation 0.6) with different separations: the 95% interval of the
    difference covers Phi(1.2/sqrt 2) - Phi(0.9/sqrt 2) in about 95% of 400 samples."""
    rng = np.random.default_rng(7)
    mu_a, mu_b, rho, m, n = 0.9, 1.2, 0.6, 100, 150
    truth = PHI(mu_b / math.sqrt(2)) - PHI(mu_a / math.sqrt(2))
    cov = [[1.0, rho], [rho, 1.0]]
    covered = 0
    for _ in range(400):
        y = np.r_[np.ones(m, int), np.zeros(n, int)]
        e = rng.multivariate_normal([0, 0], cov, size=m + n)
        covered += auc_delong_paired(y, e[:, 0] + mu_a * y, e[:, 1] + mu_b * y).difference.contains(truth)
    assert 0.915 <= covered / 400 <= 0.985, covered


def test_delong_edge_cases():
    with pytest.raises(ValueError, match="both classes.*0 positive and 3 negative"):
        auc_delong([0, 0, 0], [0.1, 0.2, 0.3])
    one = auc_delong([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3])  # one positive: no variance estimate, honest [0, 1]
    assert (one.value, one.low, one.high, one.se) == (1.0, 0.0, 1.0, None)
    with pytest.raises(ValueError, match="'score' holds 1 NaN"):
        auc_delong([1, 0], [0.5, float("nan")])
    with pytest.raises(ValueError, match=r"'score_b' has shape \(1,\); expected \(2,\)"):
        auc_delong_paired([1, 0], [0.5, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence 1.5"):
        auc_delong([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.3], 1.5)


def test_bootstrap_is_deterministic_and_needs_2000_draws():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    s = rng.random(500) + 0.3 * y
    fn = weighted_metric("roc_auc")
    first = bootstrap(fn, y, s, seed=11)
    assert bootstrap(fn, y, s, seed=11) == first
    assert bootstrap(fn, y, s, seed=12) != first
    assert (first.draws, first.seed, first.method) == (MIN_DRAWS, 11, "bootstrap")
    assert first.value == pytest.approx(roc_auc_score(y, s))
    with pytest.raises(ValueError, match=f"draws=1999: a bootstrap needs at least {MIN_DRAWS}"):
        bootstrap(fn, y, s, draws=MIN_DRAWS - 1)
    with pytest.raises(ValueError, match="draws=200"):
        metric_interval("f1", y, pred=(s > 0.6).astype(int), draws=200)
    # the bootstrap and DeLong agree on a large enough sample
    delong = auc_delong(y, s)
    assert (first.low, first.high) == pytest.approx((delong.low, delong.high), abs=0.012)


def test_bootstrap_counts_every_draw_across_blocks(monkeypatch):
    monkeypatch.setattr(stats, "_BLOCK_CELLS", 1000)  # 500 rows: two draws per block
    rng = np.random.default_rng(5)
    y, s = rng.integers(0, 2, 500), rng.random(500)
    seen = []

    def counting(w, yy, x):
        seen.append(len(w))
        return weighted_metric("log_loss")(w, yy, x)

    result = bootstrap(counting, y, s, draws=2001)
    assert sum(seen) == 2001 + 1 and max(seen) == 2  # 2001 draws plus the point estimate
    assert result.draws == 2001 and result.low < result.value < result.high


def test_paired_bootstrap_resamples_the_same_rows_for_both_models():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 400)
    pred = np.where(rng.random(400) < 0.8, y, 1 - y)
    same = bootstrap_paired(weighted_metric("f1"), y, pred, pred, metric="f1")
    assert same.difference.low == same.difference.high == 0.0 and same.difference.p_value == 1.0
    assert same.a == same.b != same.difference
    other = np.where(rng.random(400) < 0.9, y, 1 - y)
    paired = paired_difference("f1", y, pred_a=pred, pred_b=other, seed=3)
    assert paired == paired_difference("f1", y, pred_a=pred, pred_b=other, seed=3)
    assert paired.difference.value == pytest.approx(f1_score(y, other) - f1_score(y, pred))
    assert paired.difference.method == "bootstrap_paired" and paired.difference.draws == MIN_DRAWS


def test_f1_bootstrap_coverage_by_simulation():
    """y ~ Bernoulli(0.4), the prediction right 80% of the time: the population F1 is 0.64 / 0.84."""
    rng = np.random.default_rng(8)
    truth = 0.64 / 0.84
    covered = 0
    for rep in range(200):
        y = (rng.random(300) < 0.4).astype(int)
        pred = np.where(rng.random(300) < 0.8, y, 1 - y)
        covered += metric_interval("f1", y, pred=pred, seed=rep).contains(truth)
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_wilson_interval():
    w = proportion_interval(45, 50, 0.95)
    assert w.value == 0.9 and w.method == "wilson"
    assert (w.low, w.high) == pytest.approx((0.7864, 0.9565), abs=1e-4)  # the textbook Wilson values
    assert proportion_interval(0, 20).low == 0.0 and proportion_interval(20, 20).high == 1.0
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        proportion_interval(3, 0)


@pytest.mark.parametrize("metric", stats.METRICS)
def test_dispatchers_agree_with_scikit_learn(metric):
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 600)
    s_a = np.clip(0.3 * y + rng.normal(0.35, 0.25, 600), 0, 1)
    s_b = np.clip(s_a + rng.normal(0, 0.1, 600), 0, 1)
    p_a, p_b = (s_a >= 0.5).astype(int), (s_b >= 0.5).astype(int)
    sk = {"roc_auc": lambda s, p: roc_auc_score(y, s), "log_loss": lambda s, p: log_loss(y, s),
          "accuracy": lambda s, p: accuracy_score(y, p), "f1": lambda s, p: f1_score(y, p)}[metric]
    assert metric_value(metric, y, s_a, p_a) == pytest.approx(sk(s_a, p_a), rel=1e-12)
    single = metric_interval(metric, y, s_a, p_a, confidence=0.9)
    assert single.value == pytest.approx(sk(s_a, p_a)) and single.low <= single.value <= single.high
    assert single.method == stats.CI_METHODS[metric] and single.confidence == 0.9
    paired = paired_difference(metric, y, s_a, s_b, pred_a=p_a, pred_b=p_b, confidence=0.9)
    assert paired.difference.value == pytest.approx(sk(s_b, p_b) - sk(s_a, p_a), abs=1e-12)
    assert paired.difference.p_value is not None and 0.0 <= paired.difference.p_value <= 1.0
    assert PairedEstimate.from_dict(paired.to_dict()) == paired


def test_positive_class_is_named_by_the_caller():
    y = np.array([2, 1, 2, 1, 2, 1])
    s = np.array([0.9, 0.2, 0.7, 0.4, 0.3, 0.6])  # score of class 2
    assert metric_value("roc_auc", y, s, positive=2) == pytest.approx(roc_auc_score(y == 2, s))
    assert metric_value("f1", y, pred=np.array([2, 1, 2, 2, 1, 1]), positive=2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="'pred' \\(the predicted class\\) is required"):
        metric_interval("accuracy", y, score=s)
    with pytest.raises(ValueError, match="metric 'auc' is not supported"):
        metric_interval("auc", y, s)


def test_interval_round_trips_through_json_friendly_dicts():
    i = Interval(0.7, float("nan"), 0.8, 10, "bootstrap", 0.95, draws=2000, seed=1)
    d = i.to_dict()
    assert d["low"] is None and d["draws"] == 2000
    back = Interval.from_dict(d)
    assert math.isnan(back.low) and back.high == 0.8
