"""The drift methods: each reproduces the Evidently (scipy) computation it is named after, on the reference's
weighted points.

:mod:`evergreen.monitor.drift` decides which method a feature gets and what its score means; this module only
computes the scores, the part that must agree with scipy and Evidently number for number. Numeric methods take
the reference as sorted points with their counts (``ref_values``, ``ref_weights``) and the current window as a
sorted finite array, so a method is one pass over the window with no per-row Python (``bench/drift.py``);
value-count methods take ``{value: count}`` dicts. numpy and scipy are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evergreen.monitor.reference import STD_FLOOR, sorted_values

if TYPE_CHECKING:
    import numpy as np

    from evergreen.monitor.reference import FeatureStats

#: scipy's ks_2samp 'auto' mode computes exact p-values up to this sample size
KS_MAX_EXACT = 10_000


def _cdf_gaps(ref_values: np.ndarray, ref_weights: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(merged, gap)``: the sorted union of reference points and current values, and ``F_ref - F_cur`` just after
    each of them.

    Both inputs are sorted, so the union is built by inserting the (few) reference points into the current values
    at their ``searchsorted`` positions -- linear time, no second sort. Reference points go after equal current
    values, so at the last element of every run of equal values both cumulative counts include the whole run:
    exactly ``searchsorted(..., side="right")`` as scipy evaluates them. Within a run the partial counts are not
    CDF values; callers only use them where the next value is larger (Wasserstein weighs them by a zero gap).
    Temporaries are kept few and reused: at 1e6 rows page-faulting fresh arrays costs more than the arithmetic.
    """
    import numpy as np

    n1, n2 = float(ref_weights.sum()), float(len(cur))
    pos = np.searchsorted(cur, ref_values, side="right") + np.arange(len(ref_values))
    size = len(ref_values) + len(cur)
    is_cur = np.ones(size, dtype=bool)
    is_cur[pos] = False
    merged = np.empty(size, dtype="float64")
    merged[is_cur] = cur
    merged[pos] = ref_values
    gap = np.zeros(size, dtype="float64")
    gap[pos] = ref_weights
    np.cumsum(gap, out=gap)  # integer counts: exact in float64 up to 2**53
    np.divide(gap, n1, out=gap)
    cur_cdf = np.cumsum(is_cur, dtype="float64")
    np.divide(cur_cdf, n2, out=cur_cdf)
    np.subtract(gap, cur_cdf, out=gap)
    return merged, gap


def ks_pvalue(ref_values: np.ndarray, ref_weights: np.ndarray, cur: np.ndarray, exact: bool) -> float:
    """Two-sided two-sample K-S p-value as ``scipy.stats.ks_2samp(reference, current)`` ('auto' mode)."""
    import numpy as np
    from scipy import stats

    n1, n2 = int(ref_weights.sum()), int(len(cur))
    if exact and max(n1, n2) <= KS_MAX_EXACT:
        # scipy's exact distribution for small samples: hand it the very samples Evidently does
        return float(stats.ks_2samp(np.repeat(ref_values, ref_weights), cur).pvalue)
    merged, gap = _cdf_gaps(ref_values, ref_weights, cur)
    last_of_run = np.empty(len(merged), dtype=bool)
    np.less(merged[:-1], merged[1:], out=last_of_run[:-1])
    last_of_run[-1] = True
    gap = gap[last_of_run]
    d = max(float(gap.max()), float(np.clip(-gap.min(), 0, 1)))
    # scipy's asymptotic branch (n > 10000 or a sketched reference, whose exact distribution is not defined)
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(stats.distributions.kstwo.sf(d, np.round(en)), 0, 1))


def wasserstein_normed(ref_values: np.ndarray, ref_weights: np.ndarray, cur: np.ndarray, std: float) -> float:
    """``scipy.stats.wasserstein_distance(reference, current) / max(std(reference), 0.001)`` on sorted inputs:
    the integral of ``|F_ref - F_cur|`` over the merged values."""
    import numpy as np

    merged, gap = _cdf_gaps(ref_values, ref_weights, cur)
    np.abs(gap, out=gap)
    widths = np.subtract(merged[1:], merged[:-1], out=merged[:-1])
    # multiply + sum rather than np.dot: BLAS's thread pool costs more than it saves on shared cores
    area = np.multiply(gap[:-1], widths, out=widths).sum()
    return float(area / max(std, STD_FLOOR))


def _aligned(ref: dict[Any, int], cur: dict[Any, int]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Counts of reference and current over the union of their values (Evidently's dict-merge semantics), in sorted
    value order.

    Sorted, not set order: a set of strings iterates in an order that changes with ``PYTHONHASHSEED``, and the
    chi-square, Jensen-Shannon and PSI sums over these arrays then differ in their last bits from one process to
    the next -- enough to make an identical re-run look like new data to :mod:`evergreen.monitor.runs`.
    """
    import numpy as np

    keys = sorted_values(set(ref) | set(cur))
    return keys, np.array([ref.get(k, 0) for k in keys], "float64"), np.array([cur.get(k, 0) for k in keys], "float64")


def chisquare_pvalue(ref: dict[Any, int], cur: dict[Any, int]) -> float:
    """Evidently's chi-square: current counts against reference counts scaled to the current size."""
    import warnings

    from scipy.stats import chisquare

    _, r, c = _aligned(ref, cur)
    f_exp = r * (c.sum() / r.sum())
    with warnings.catch_warnings():
        # a value never seen in the reference has expected count 0: statistic inf, p-value 0 (drift), as in Evidently
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(chisquare(c, f_exp)[1])


def z_pvalue(ref: dict[Any, int], cur: dict[Any, int]) -> float:
    """Evidently's two-proportion Z test on the share of values other than the first (sorted) value."""
    import numpy as np
    from scipy.stats import norm

    if len(ref) == 1 and len(cur) == 1 and next(iter(ref)) == next(iter(cur)):
        return 1.0
    key = sorted_values(set(ref) | set(cur))[0]
    n1, n2 = sum(ref.values()), sum(cur.values())
    p1 = float(n1 - ref.get(key, 0)) / n1
    p2 = float(n2 - cur.get(key, 0)) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _fill_zeroes(p: np.ndarray) -> np.ndarray:
    import numpy as np

    low = p[p != 0].min()
    out = p.copy()
    np.place(out, out == 0, low / 10**6 if low <= 0.0001 else 0.0001)
    return out


def _binned(stats: FeatureStats, cur_values: np.ndarray | None, cur_counts: dict[Any, int],
            fill_zeroes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's ``get_binned_data``: value shares (<= 20 reference values or categorical) or shares in Sturges
    bins over reference and current together (numeric with more than 20 distinct reference values)."""
    import numpy as np

    n1, n2 = stats.n, sum(cur_counts.values()) if cur_values is None else len(cur_values)
    if stats.kind == "num" and (not stats.exact or len(stats.values) > 20):
        lo, hi = min(stats.min, float(cur_values[0])), max(stats.max, float(cur_values[-1]))
        total = n1 + n2
        width = (hi - lo) / (np.log2(total) + 1.0)
        if stats.type == "int" and width < 1:  # numpy's rule for integer data
            width = 1
        bins = int(np.ceil((hi - lo) / width)) if width else 1
        edges = np.linspace(lo, hi, bins + 1)
        ref_p = np.histogram(stats.values, edges, weights=stats.weights)[0] / n1
        cur_p = np.histogram(cur_values, edges)[0] / n2
    else:
        _, r, c = _aligned(stats.counts(), cur_counts)
        ref_p, cur_p = r / n1, c / n2
    if fill_zeroes:
        ref_p, cur_p = _fill_zeroes(ref_p), _fill_zeroes(cur_p)
    return ref_p, cur_p


def jensenshannon_distance(stats: FeatureStats, cur_values: np.ndarray | None, cur_counts: dict[Any, int]) -> float:
    from scipy.spatial import distance

    ref_p, cur_p = _binned(stats, cur_values, cur_counts, fill_zeroes=False)
    return float(distance.jensenshannon(ref_p, cur_p))


def psi_value(stats: FeatureStats, cur_values: np.ndarray | None, cur_counts: dict[Any, int]) -> float:
    import numpy as np

    ref_p, cur_p = _binned(stats, cur_values, cur_counts, fill_zeroes=True)
    return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
