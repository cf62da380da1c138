"""Intervals and tests shared by every decision: training evaluation, live performance, the gate, the A/B analysis.

One rule per metric, at the caller's confidence, with the positive class named by the caller:

=============  ===================================================  ===========================================
metric         one model (:func:`metric_interval`)                  two models, same rows (:func:`paired_difference`)
=============  ===================================================  ===========================================
``roc_auc``    DeLong (1988) variance of the Mann-Whitney AUC       DeLong covariance of the two AUCs
``accuracy``   Wilson score interval of a proportion                normal interval of the per-row differences
``log_loss``   normal interval of the mean per-row loss             normal interval of the per-row differences
``f1``         percentile bootstrap, >= 2,000 draws                 paired bootstrap (the same rows for both)
=============  ===================================================  ===========================================

DeLong uses the midrank form of Sun & Xu (2014): three sorts per model, O(n log n), exact for the AUC estimator and
deterministic. Ties count one half, as in the AUC itself. A paired difference is always ``b - a`` (``a`` the
reference, e.g. the champion; ``b`` the model under test), with a two-sided p-value for "no difference".

The bootstrap resamples rows as weights (no copies), vectorised over a block of draws, from a fixed seed, so the same
inputs give the same interval everywhere. Rows that take few distinct values (labels and 0/1 predictions: F1 and
accuracy) are resampled as one multinomial draw of their distinct-row counts, which is the same distribution at
O(draws) cost instead of O(draws * n). Fewer than :data:`MIN_DRAWS` draws is refused.

Two independent samples (the A/B test's arms): :func:`two_sample_difference` (two-proportion z for 0/1 values,
Welch's t otherwise) and :func:`bootstrap_two_sample`; an always-valid :func:`confidence_sequence` for daily looks;
:func:`minimum_sample_size` from an effect and a power; :func:`chi_square_gof` for sample-ratio mismatch.

Numpy (scipy for the t and chi-square tails, imported inside those two functions); imported by pure modules and task
bodies only, never at DAG parse time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from evergreen.jsonable import jsonable

METRICS = ("roc_auc", "accuracy", "log_loss", "f1")
#: metrics computed from the positive-class score; the others from the predicted class
SCORE_METRICS = frozenset({"roc_auc", "log_loss"})
LOWER_IS_BETTER = frozenset({"log_loss"})
CI_METHODS = {"roc_auc": "delong", "accuracy": "wilson", "log_loss": "normal", "f1": "bootstrap"}
MIN_DRAWS = 2000
DEFAULT_SEED = 20261101
#: rows with at most this many distinct values are resampled as one multinomial draw of their counts
_COMPRESS_MAX = 1024
#: bound on the weights held at once (draws in a block * rows): 4M float64 = 32 MB
_BLOCK_CELLS = 1 << 22

WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval: ``low <= value <= high`` at ``confidence`` over ``n`` rows, by ``method``.

    ``se`` is the standard error where the method has one; ``p_value`` (differences only) is two-sided, for "the true
    difference is 0"; ``draws`` and ``seed`` are set for the bootstrap.
    """

    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float
    se: float | None = None
    p_value: float | None = None
    draws: int | None = None
    seed: int | None = None

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Interval:
        return cls(**{k: (float("nan") if v is None and k in ("value", "low", "high") else v) for k, v in data.items()})


@dataclass(frozen=True)
class PairedEstimate:
    """Two models scored on the same rows: each one's interval and the difference ``b - a`` with its p-value."""

    metric: str
    a: Interval
    b: Interval
    difference: Interval

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "difference": self.difference.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedEstimate:
        return cls(data["metric"], *(Interval.from_dict(data[k]) for k in ("a", "b", "difference")))


def greater_is_better(metric: str) -> bool:
    _check_metric(metric)
    return metric not in LOWER_IS_BETTER


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (1.96 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r} must be between 0 and 1 (exclusive), e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _p_two_sided(estimate: float, se: float) -> float:
    if not se > 0.0:
        return 1.0 if estimate == 0.0 else 0.0
    return math.erfc(abs(estimate) / se / math.sqrt(2.0))


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric '{metric}' is not supported; use one of {', '.join(METRICS)}")


def _labels(y: Any, positive: Any = 1) -> np.ndarray:
    """``y == positive`` as a bool array (the one rule every metric here uses for the positive class)."""
    arr = np.asarray(y)
    if arr.ndim != 1 or not len(arr):
        raise ValueError(f"labels must be a non-empty 1-d array, got shape {arr.shape}")
    return arr == positive


def _values(name: str, x: Any, n: int) -> np.ndarray:
    if x is None:
        raise ValueError(f"'{name}' is required for this metric")
    arr = np.asarray(x, dtype="float64")
    if arr.shape != (n,):
        raise ValueError(f"'{name}' has shape {arr.shape}; expected ({n},), one value per label")
    if not np.isfinite(arr).all():
        raise ValueError(f"'{name}' holds {int((~np.isfinite(arr)).sum())} NaN or infinite values; drop those rows")
    return arr


# --- ROC AUC: DeLong ---------------------------------------------------------------------------------------


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` where tied values share the mean of their ranks (one stable sort)."""
    n = len(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]
    ranks = np.empty(n, dtype="float64")
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(aucs, covariance)`` for ``k`` score rows on the same labels (Sun & Xu's midrank algorithm).

    The placement values V10 (per positive: the share of negatives it outranks) and V01 (per negative: the share of
    positives that outrank it) come from three midrankings; the covariance is ``S10 / m + S01 / n``.
    """
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError(f"roc_auc needs both classes; the labels have {m} positive and {n} negative rows")
    pos, neg = scores[:, y], scores[:, ~y]
    k = scores.shape[0]
    v10, v01, aucs = np.empty((k, m)), np.empty((k, n)), np.empty(k)
    for r in range(k):
        tz = midranks(np.concatenate([pos[r], neg[r]]))
        tx, ty = midranks(pos[r]), midranks(neg[r])
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    if m < 2 or n < 2:  # one row of a class has no variance estimate: say so with an uninformative interval
        return aucs, np.full((k, k), np.nan)
    cov = np.atleast_2d(np.cov(v10, ddof=1)) / m + np.atleast_2d(np.cov(v01, ddof=1)) / n
    return aucs, cov


def auc_delong(y: Any, score: Any, confidence: float = 0.95, *, positive: Any = 1) -> Interval:
    """ROC AUC with DeLong's interval (clipped to [0, 1]; [0, 1] itself with fewer than two rows of a class)."""
    yb = _labels(y, positive)
    s = _values("score", score, len(yb))
    aucs, cov = _delong(yb, s[None, :])
    auc, var = float(aucs[0]), float(cov[0, 0])
    if not math.isfinite(var):
        return Interval(auc, 0.0, 1.0, len(yb), "delong", confidence)
    se = math.sqrt(max(var, 0.0))
    half = z_value(confidence) * se
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half), len(yb), "delong", confidence, se=se)


def auc_delong_paired(y: Any, score_a: Any, score_b: Any, confidence: float = 0.95, *,
                      positive: Any = 1) -> PairedEstimate:
    """Both AUCs and the difference ``b - a`` on the same rows with DeLong's covariance and a two-sided p-value."""
    yb = _labels(y, positive)
    s = np.vstack([_values("score_a", score_a, len(yb)), _values("score_b", score_b, len(yb))])
    aucs, cov = _delong(yb, s)
    z, n = z_value(confidence), len(yb)
    out = []
    for r in range(2):
        var = float(cov[r, r])
        se = math.sqrt(max(var, 0.0)) if math.isfinite(var) else None
        lo, hi = (0.0, 1.0) if se is None else (max(0.0, aucs[r] - z * se), min(1.0, aucs[r] + z * se))
        out.append(Interval(float(aucs[r]), lo, hi, n, "delong", confidence, se=se))
    d = float(aucs[1] - aucs[0])
    var_d = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not math.isfinite(var_d):
        diff = Interval(d, -1.0, 1.0, n, "delong_paired", confidence, p_value=1.0)
    else:
        se = math.sqrt(max(var_d, 0.0))
        diff = Interval(d, max(-1.0, d - z * se), min(1.0, d + z * se), n, "delong_paired", confidence, se=se,
                        p_value=_p_two_sided(d, se))
    return PairedEstimate("roc_auc", out[0], out[1], diff)


# --- analytic intervals --------------------------------------------------------------------------------------


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval of a proportion (accuracy-like metrics): good coverage near 0 and 1 and at small n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n > 0; got {successes} of {n}")
    z = z_value(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact ends where round-off would miss them
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(p, low, high, n, "wilson", confidence,
                    se=math.sqrt(p * (1 - p) / n))


def mean_interval(values: Any, confidence: float = 0.95, method: str = "normal", *, test: bool = False) -> Interval:
    """The central-limit interval ``mean +- z * sd / sqrt(n)`` of per-row terms; with ``test`` (per-row differences)
    also the two-sided p-value for a mean of 0."""
    v = np.asarray(values, dtype="float64")
    if not len(v):
        raise ValueError("a mean interval needs at least one value")
    mean = float(v.mean())
    se = float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else 0.0
    half = z_value(confidence) * se
    return Interval(mean, mean - half, mean + half, len(v), method, confidence, se=se,
                    p_value=_p_two_sided(mean, se) if test else None)


def _row_terms(metric: str, yb: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-row terms whose mean is the metric (accuracy: correct; log_loss: the row's loss)."""
    if metric == "accuracy":
        return ((x == 1.0) == yb).astype("float64")
    eps = np.finfo("float64").eps  # scikit-learn's clipping
    p = np.clip(x, eps, 1 - eps)
    return -np.where(yb, np.log(p), np.log(1 - p))


# --- bootstrap -------------------------------------------------------------------------------------------------


def weighted_metric(metric: str) -> WeightedMetric:
    """``f(W, y, x) -> values``: the metric under each row of weights ``W`` (draws x rows) at once.

    ``y`` holds 0/1 labels (positive = 1), ``x`` the score (``roc_auc``, ``log_loss``) or the 0/1 prediction. With
    unit weights each equals scikit-learn's metric. The form :func:`bootstrap` takes for any metric.
    """
    _check_metric(metric)
    if metric == "roc_auc":
        return _weighted_auc
    if metric == "f1":
        return _weighted_f1

    def mean_of_terms(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (w @ _row_terms(metric, y.astype(bool), x)) / w.sum(axis=1)

    return mean_of_terms


def _weighted_auc(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    # Mann-Whitney with ties: group equal scores once, then per draw the weighted negatives below each group.
    order = np.argsort(x, kind="mergesort")
    xs, ys = x[order], y[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ws = w[:, order]
    pos = np.add.reduceat(ws * ys, starts, axis=1)
    neg = np.add.reduceat(ws * (1.0 - ys), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / den, np.nan)


def _weighted_f1(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    tp, fp, fn = w @ (x * y), w @ (x * (1.0 - y)), w @ ((1.0 - x) * y)
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1.0), 0.0)  # scikit-learn's zero_division=0


def _weight_blocks(columns: np.ndarray, draws: int, seed: int):
    """``(rows, blocks)``: the rows the weights apply to, and an iterator of weight blocks (draws x rows) that
    together are ``draws`` bootstrap resamples of the ``n`` rows of ``columns``."""
    if draws < MIN_DRAWS:
        raise ValueError(f"draws={draws}: a bootstrap needs at least {MIN_DRAWS} draws for stable interval ends")
    n = len(columns)
    rng = np.random.default_rng(seed)
    distinct, counts = np.unique(columns, axis=0, return_counts=True)
    compress = len(distinct) <= _COMPRESS_MAX
    rows = distinct if compress else columns
    size = max(1, min(draws, _BLOCK_CELLS // len(rows)))

    def blocks():
        done = 0
        while done < draws:
            c = min(size, draws - done)
            if compress:  # resampling n rows = one multinomial draw of the distinct rows' counts
                yield rng.multinomial(n, counts / n, size=c).astype("float64")
            else:
                idx = rng.integers(0, n, size=(c, n)) + n * np.arange(c)[:, None]
                yield np.bincount(idx.ravel(), minlength=c * n).reshape(c, n).astype("float64")
            done += c

    return rows, blocks()


def _percentile(reps: np.ndarray, point: float, n: int, confidence: float, method: str, draws: int, seed: int,
                p_value: float | None = None) -> Interval:
    finite = reps[np.isfinite(reps)]
    if not len(finite):
        return Interval(point, float("nan"), float("nan"), n, method, confidence, draws=draws, seed=seed)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(point, float(lo), float(hi), n, method, confidence, se=float(finite.std(ddof=1)),
                    p_value=p_value, draws=draws, seed=seed)


def bootstrap(metric_fn: WeightedMetric, y: Any, x: Any, *, draws: int = MIN_DRAWS, seed: int = DEFAULT_SEED,
              confidence: float = 0.95, positive: Any = 1) -> Interval:
    """Percentile bootstrap interval of ``metric_fn`` (a :func:`weighted_metric`-style function) over the rows."""
    yb = _labels(y, positive).astype("float64")
    xv = _values("x", x, len(yb))
    rows, blocks = _weight_blocks(np.column_stack([yb, xv]), draws, seed)
    reps = np.concatenate([metric_fn(w, rows[:, 0], rows[:, 1]) for w in blocks])
    point = float(metric_fn(np.ones((1, len(yb))), yb, xv)[0])
    return _percentile(reps, point, len(yb), confidence, "bootstrap", draws, seed)


def bootstrap_paired(metric_fn: WeightedMetric, y: Any, x_a: Any, x_b: Any, *, draws: int = MIN_DRAWS,
                     seed: int = DEFAULT_SEED, confidence: float = 0.95, positive: Any = 1,
                     metric: str = "custom") -> PairedEstimate:
    """Paired bootstrap: every draw resamples the same rows for both models; the difference is ``b - a``."""
    yb = _labels(y, positive).astype("float64")
    xa, xb = _values("x_a", x_a, len(yb)), _values("x_b", x_b, len(yb))
    rows, blocks = _weight_blocks(np.column_stack([yb, xa, xb]), draws, seed)
    ra, rb = [], []
    for w in blocks:
        ra.append(metric_fn(w, rows[:, 0], rows[:, 1]))
        rb.append(metric_fn(w, rows[:, 0], rows[:, 2]))
    reps_a, reps_b = np.concatenate(ra), np.concatenate(rb)
    ones = np.ones((1, len(yb)))
    pa, pb = float(metric_fn(ones, yb, xa)[0]), float(metric_fn(ones, yb, xb)[0])
    d = reps_b - reps_a
    d = d[np.isfinite(d)]
    p = min(1.0, 2.0 * min(float((d <= 0).mean()), float((d >= 0).mean()))) if len(d) else None
    n = len(yb)
    return PairedEstimate(
        metric,
        _percentile(reps_a, pa, n, confidence, "bootstrap", draws, seed),
        _percentile(reps_b, pb, n, confidence, "bootstrap", draws, seed),
        _percentile(reps_b - reps_a, pb - pa, n, confidence, "bootstrap_paired", draws, seed, p_value=p),
    )


# --- dispatchers -----------------------------------------------------------------------------------------------


def _pred(name: str, x: Any, n: int, positive: Any) -> np.ndarray:
    if x is None:
        raise ValueError(f"'{name}' (the predicted class) is required for this metric")
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"'{name}' has shape {arr.shape}; expected ({n},), one value per label")
    return (arr == positive).astype("float64")


def _inputs(metric: str, y: Any, positive: Any, **given: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """The labels as bool and, per model, the column the metric reads: ``score*`` (checked finite) for the score
    metrics, ``pred*`` as 0/1 (``== positive``) for the others."""
    _check_metric(metric)
    yb = _labels(y, positive)
    kind = "score" if metric in SCORE_METRICS else "pred"
    columns = []
    for name, x in given.items():
        if name.startswith(kind):
            columns.append(_values(name, x, len(yb)) if kind == "score" else _pred(name, x, len(yb), positive))
    return yb, columns


def metric_value(metric: str, y: Any, score: Any = None, pred: Any = None, *, positive: Any = 1) -> float:
    """The point metric (equal to scikit-learn's), from the score or the predicted class as the metric needs."""
    yb, (x,) = _inputs(metric, y, positive, score=score, pred=pred)
    if metric == "roc_auc":
        return float(_delong(yb, x[None, :])[0][0])
    return float(weighted_metric(metric)(np.ones((1, len(yb))), yb.astype("float64"), x)[0])


def metric_interval(metric: str, y: Any, score: Any = None, pred: Any = None, *, confidence: float = 0.95,
                    positive: Any = 1, draws: int = MIN_DRAWS, seed: int = DEFAULT_SEED) -> Interval:
    """The metric with its interval by :data:`CI_METHODS`: ``score`` is the positive-class score, ``pred`` the
    predicted class (compared with ``positive``); each metric reads the one it needs."""
    yb, (x,) = _inputs(metric, y, positive, score=score, pred=pred)
    if metric == "roc_auc":
        return auc_delong(yb, x, confidence, positive=True)
    if metric == "accuracy":
        return proportion_interval(int(_row_terms(metric, yb, x).sum()), len(yb), confidence)
    if metric == "log_loss":
        return mean_interval(_row_terms(metric, yb, x), confidence)
    return bootstrap(weighted_metric(metric), yb, x, draws=draws, seed=seed, confidence=confidence, positive=True)


def paired_difference(metric: str, y: Any, score_a: Any = None, score_b: Any = None, *, pred_a: Any = None,
                      pred_b: Any = None, confidence: float = 0.95, positive: Any = 1, draws: int = MIN_DRAWS,
                      seed: int = DEFAULT_SEED) -> PairedEstimate:
    """Models ``a`` and ``b`` on the same rows: both metrics and ``b - a`` with its interval and p-value."""
    yb, (xa, xb) = _inputs(metric, y, positive, score_a=score_a, score_b=score_b, pred_a=pred_a, pred_b=pred_b)
    if metric == "roc_auc":
        return auc_delong_paired(yb, xa, xb, confidence, positive=True)
    if metric == "f1":
        return bootstrap_paired(weighted_metric(metric), yb, xa, xb, draws=draws, seed=seed, confidence=confidence,
                                positive=True, metric=metric)
    ta, tb = _row_terms(metric, yb, xa), _row_terms(metric, yb, xb)
    if metric == "accuracy":
        a, b = (proportion_interval(int(t.sum()), len(t), confidence) for t in (ta, tb))
    else:
        a, b = (mean_interval(t, confidence) for t in (ta, tb))
    return PairedEstimate(metric, a, b, mean_interval(tb - ta, confidence, "normal_paired", test=True))


# --- two independent samples, sequential tests, sample sizes, goodness of fit ------------------------------------


def two_sample_difference(values_a: Any, values_b: Any, confidence: float = 0.95) -> Interval:
    """``mean(b) - mean(a)`` of two independent samples with its interval and a two-sided p-value.

    0/1 values (proportions): the two-proportion z test -- the unpooled (Wald) interval, the p-value from the pooled
    standard error under "no difference" -- method ``two_proportion_z``. Otherwise Welch's t: unequal variances,
    Welch-Satterthwaite degrees of freedom, method ``welch_t``. ``se`` is the unpooled standard error of the
    difference either way; a difference with zero variance in both samples has ``se`` 0 and no interval to speak of
    (the caller says so).
    """
    a, b = np.asarray(values_a, dtype="float64"), np.asarray(values_b, dtype="float64")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a two-sample difference needs at least 2 values per sample; got {len(a)} and {len(b)}")
    for name, v in (("values_a", a), ("values_b", b)):
        if not np.isfinite(v).all():
            raise ValueError(f"'{name}' holds {int((~np.isfinite(v)).sum())} NaN or infinite values; drop those rows")
    na, nb = len(a), len(b)
    ma, mb = float(a.mean()), float(b.mean())
    d = mb - ma
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if binary:
        va, vb = ma * (1 - ma), mb * (1 - mb)  # the MLE variance of a proportion
        se = math.sqrt(va / na + vb / nb)
        pooled = (ma * na + mb * nb) / (na + nb)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
        half = z_value(confidence) * se
        return Interval(d, d - half, d + half, na + nb, "two_proportion_z", confidence, se=se,
                        p_value=_p_two_sided(d, se0))
    va, vb = float(a.var(ddof=1)), float(b.var(ddof=1))
    se = math.sqrt(va / na + vb / nb)
    if not se > 0:
        return Interval(d, d, d, na + nb, "welch_t", confidence, se=0.0, p_value=_p_two_sided(d, 0.0))
    from scipy.stats import t as student_t

    df = se**4 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, df)) * se
    p = float(2.0 * student_t.sf(abs(d) / se, df))
    return Interval(d, d - half, d + half, na + nb, "welch_t", confidence, se=se, p_value=p)


def bootstrap_two_sample(metric_fn: WeightedMetric, y_a: Any, x_a: Any, y_b: Any, x_b: Any, *,
                         draws: int = MIN_DRAWS, seed: int = DEFAULT_SEED, confidence: float = 0.95,
                         positive: Any = 1) -> Interval:
    """Percentile bootstrap of ``metric(b) - metric(a)`` for two independent samples: each draw resamples each
    sample on its own (``a`` from ``seed``, ``b`` from ``seed + 1``) and takes the difference. A plain mean is the
    metric ``mean_metric`` with ``y`` all zeros."""
    ya, yb = _labels(y_a, positive).astype("float64"), _labels(y_b, positive).astype("float64")
    xa, xb = _values("x_a", x_a, len(ya)), _values("x_b", x_b, len(yb))
    reps = []
    for y, x, s in ((ya, xa, seed), (yb, xb, seed + 1)):
        rows, blocks = _weight_blocks(np.column_stack([y, x]), draws, s)
        reps.append(np.concatenate([metric_fn(w, rows[:, 0], rows[:, 1]) for w in blocks]))
    point = float(metric_fn(np.ones((1, len(yb))), yb, xb)[0] - metric_fn(np.ones((1, len(ya))), ya, xa)[0])
    d = reps[1] - reps[0]
    finite = d[np.isfinite(d)]
    p = min(1.0, 2.0 * min(float((finite <= 0).mean()), float((finite >= 0).mean()))) if len(finite) else None
    return _percentile(d, point, len(ya) + len(yb), confidence, "bootstrap_two_sample", draws, seed, p_value=p)


def mean_metric(w: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The weighted mean of ``x`` (``y`` is ignored): the :func:`weighted_metric`-style form of a plain mean."""
    return (w @ x) / w.sum(axis=1)


def sequential_rho(confidence: float, tuning: float) -> float:
    """The mixing parameter of :func:`confidence_sequence` that makes it tightest at ``tuning`` units.

    Waudby-Smith et al. (2023, eq. 3.4; the two-sided form GrowthBook's gbstats uses):
    ``rho = sqrt((-2 ln alpha + ln(-2 ln alpha + 1)) / tuning)``, ``alpha = 1 - confidence``.
    """
    alpha = 1.0 - confidence
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"confidence {confidence!r} must be between 0 and 1 (exclusive), e.g. 0.95")
    if not tuning > 0:
        raise ValueError(f"the sequential tuning parameter must be > 0 (units at which the sequence is tightest); "
                         f"got {tuning!r}")
    return math.sqrt((-2.0 * math.log(alpha) + math.log(-2.0 * math.log(alpha) + 1.0)) / tuning)


def confidence_sequence(estimate: float, se: float, n: int, confidence: float = 0.95, *,
                        tuning: float = 5000.0) -> Interval:
    """An always-valid interval for an asymptotically normal estimate: the normal-mixture asymptotic confidence
    sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and asymptotic
    confidence sequences" (Ann. Statist., 2024; arXiv:2103.06476), after Howard, Ramdas, McAuliffe & Sekhon (2021).

    With probability ``confidence`` the sequence covers the true value at *every* ``n`` at once, so an analysis may
    look at it daily and stop whenever it excludes a value, without inflating the error rate the way repeated
    fixed-horizon intervals do. ``se`` is the estimate's standard error at ``n`` units; the per-unit variance is
    ``se^2 * n`` and the half-width ``sqrt(se^2 n) * sqrt(2 (n rho^2 + 1) ln(sqrt(n rho^2 + 1) / alpha) / (n rho)^2)``
    with ``rho`` from :func:`sequential_rho`. ``p_value`` is the always-valid p-value for 0, ``1 / e-value`` of the
    same mixture (their eq. 155), capped at 1.
    """
    if n < 1:
        raise ValueError(f"a confidence sequence needs n >= 1 units; got {n}")
    if not (math.isfinite(se) and se > 0):
        raise ValueError(f"a confidence sequence needs a positive, finite standard error; got {se!r}")
    alpha = 1.0 - confidence
    rho2 = sequential_rho(confidence, tuning) ** 2
    v = n * rho2 + 1.0
    s2 = se * se * n
    half = math.sqrt(s2) * math.sqrt(2.0 * v * math.log(math.sqrt(v) / alpha) / (n * n * rho2))
    log_e = rho2 * (estimate * estimate * n / (se * se)) / (2.0 * v) - 0.5 * math.log(v)
    p = 1.0 if log_e <= 0 else min(1.0, math.exp(-log_e))
    return Interval(estimate, estimate - half, estimate + half, n, "confidence_sequence", confidence, se=se,
                    p_value=p)


def minimum_sample_size(sd_a: float, sd_b: float, effect: float, *, confidence: float = 0.95, power: float = 0.8,
                        share_b: float = 0.5) -> int:
    """Units (both samples together) a two-sided fixed-horizon test at ``confidence`` needs to detect ``effect``
    (an absolute difference of means) with ``power``, when ``share_b`` of the units go to ``b``:
    ``N = (z_{1-alpha/2} + z_power)^2 (sd_a^2 / (1 - share_b) + sd_b^2 / share_b) / effect^2`` (the normal
    approximation; ``sd`` are per-unit standard deviations)."""
    if not effect > 0:
        raise ValueError(f"the effect to detect must be > 0; got {effect!r}")
    if not 0.0 < power < 1.0 or not 0.0 < share_b < 1.0:
        raise ValueError(f"power ({power!r}) and share_b ({share_b!r}) must be between 0 and 1 (exclusive)")
    z = z_value(confidence) + NormalDist().inv_cdf(power)
    return int(math.ceil(z * z * (sd_a * sd_a / (1.0 - share_b) + sd_b * sd_b / share_b) / (effect * effect)))


def chi_square_gof(observed: Any, shares: Any) -> tuple[float, float]:
    """Pearson's chi-square goodness-of-fit test of counts against expected shares: ``(statistic, p_value)`` with
    ``k - 1`` degrees of freedom (the sample-ratio-mismatch test). Every expected share must be > 0."""
    obs = np.asarray(observed, dtype="float64")
    p = np.asarray(shares, dtype="float64")
    if obs.ndim != 1 or obs.shape != p.shape or len(obs) < 2:
        raise ValueError(f"chi-square needs matching 1-d counts and shares of at least 2 groups; got {obs.shape} and "
                         f"{p.shape}")
    if (obs < 0).any() or not (p > 0).all():
        raise ValueError("chi-square needs counts >= 0 and expected shares > 0")
    total = obs.sum()
    if not total > 0:
        raise ValueError("chi-square needs at least one observation")
    expected = total * p / p.sum()
    stat = float(((obs - expected) ** 2 / expected).sum())
    from scipy.special import gammaincc

    return stat, float(gammaincc((len(obs) - 1) / 2.0, stat / 2.0))
