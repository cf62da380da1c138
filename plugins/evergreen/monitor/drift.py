"""Drift engine: per-feature drift scores and the dataset verdict, the way Evidently's ``DataDriftPreset`` does it.

Pure Python (numpy, scipy, pandas); no Airflow. :func:`compute_drift` compares a current window with the
:class:`~evergreen.monitor.reference.ReferenceStats` of the serving model version and returns a :class:`DriftResult`.

Methods (Evidently 0.7.23 defaults, ``evidently.legacy.calculations.stattests.registry._get_default_stattest``)
---------------------------------------------------------------------------------------------------------------
``n_ref`` is the reference's non-null count, ``n_values`` the distinct non-null values of reference and current
together.

=============  =====================================  ==========================================
               reference <= 1000 values               reference > 1000 values
=============  =====================================  ==========================================
numeric        ``n_values`` <= 2: Z test (p < 0.05)   ``n_values`` <= 5: Jensen-Shannon (>= 0.1)
               <= 5: chi-square (p < 0.05)            else: normed Wasserstein (>= 0.1)
               else: K-S (p <= 0.05)
categorical    ``n_values`` <= 2: Z test (p < 0.05)   Jensen-Shannon distance (>= 0.1)
               else: chi-square (p < 0.05)
=============  =====================================  ==========================================

P-value methods (``ks``, ``chisquare``, ``z``) flag drift when the p-value is *below* the threshold (K-S: at or
below, as in Evidently); distance methods (``wasserstein``, ``jensenshannon``, ``psi``) when the distance is *at or
above* it. Nulls and +-inf are dropped first. Wasserstein is normed by ``max(std(reference), 0.001)``, so a
constant numeric column does not divide by zero; a constant column otherwise simply has one value (Z test / JS on
value counts). The dataset drifts when the share of drifted features is at least ``drift_share`` (0.5).

Column kind: ``float`` features are numeric, ``category``/``bool`` categorical, and an ``int`` feature is
categorical when its reference has at most 10 distinct values -- Evidently's rule for integer columns. Evidently
applies that rule to each current frame; here it is fixed once per model version from the reference, so the
method cannot flip from run to run (the verdicts agree whenever the current window has the same cardinality
class, which is what the parity test checks with Evidently's own inference).

Pinning (``DriftPolicy``): ``feature_methods[name]`` > ``method`` > the default above; ``feature_thresholds[name]``
> ``threshold`` > the method's default threshold. A model-wide ``method`` applies to the features of a kind it
supports (``ks``/``wasserstein`` numeric, ``chisquare``/``z`` categorical, ``jensenshannon``/``psi`` both) and the
others keep their default; a per-feature pin of a method that does not fit the feature's kind is reported as
"cannot judge" (Evidently raises). Method and threshold are recorded with every result.

Bad input never crashes and never yields a verdict it cannot support: an empty window or fewer rows than
``min_rows`` makes the whole result "cannot judge"; a feature missing from the window, of the wrong type, all
null, with fewer than ``min_values`` non-null values, or without usable reference statistics is "cannot judge" on
its own, with the reason. The dataset verdict then holds only if it holds whatever the unjudged features would show
(drifted count already >= ``drift_share`` of all features, or below it even if every unjudged one drifted);
otherwise the dataset is "cannot judge" too.

Speed: every method (in :mod:`evergreen.monitor.stattests`) works on sorted numpy arrays and value counts -- one
sort of the current window per numeric feature, no per-row Python -- see ``bench/drift.py`` for the comparison
with Evidently.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from evergreen.jsonable import jsonable
from evergreen.monitor.reference import categorical_counts, numeric_values, sorted_finite
from evergreen.monitor.stattests import (
    chisquare_pvalue,
    jensenshannon_distance,
    ks_pvalue,
    psi_value,
    wasserstein_normed,
    z_pvalue,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import DriftPolicy, ModelConfig
    from evergreen.monitor.reference import FeatureStats, ReferenceStats

log = logging.getLogger(__name__)

#: method -> (default threshold, kinds it applies to, score kind)
METHODS: dict[str, tuple[float, tuple[str, ...], str]] = {
    "ks": (0.05, ("num",), "p_value"),
    "chisquare": (0.05, ("cat",), "p_value"),
    "z": (0.05, ("cat",), "p_value"),
    "wasserstein": (0.1, ("num",), "distance"),
    "jensenshannon": (0.1, ("num", "cat"), "distance"),
    "psi": (0.1, ("num", "cat"), "distance"),
}
#: Evidently's reference size up to which the small-sample tests are the default
SMALL_REFERENCE = 1000


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict: ``status`` "ok" with ``score``/``drifted``, or "cannot_judge" with the ``reason``."""

    feature: str
    kind: str  # "num" | "cat"
    method: str
    threshold: float
    score: float | None
    drifted: bool | None
    status: str  # "ok" | "cannot_judge"
    reason: str | None
    n_reference: int
    n_current: int  # non-null values compared
    n_null_current: int = 0
    pinned: bool = False  # method or threshold came from the model's DriftPolicy
    exact: bool = True  # False: scored against the reference's quantile sketch (error bound: score_error)
    score_error: float = 0.0  # bound on |score - score on the full reference| (normed Wasserstein only)

    @property
    def score_kind(self) -> str:
        return METHODS[self.method][2] if self.method in METHODS else "score"

    @property
    def drift_if(self) -> str:
        """The verdict rule in words, e.g. ``"p_value <= 0.05"``."""
        op = "<=" if self.method == "ks" else "<" if self.score_kind == "p_value" else ">="
        return f"{self.score_kind} {op} {self.threshold:g}"


@dataclass(frozen=True)
class DriftResult:
    """The window's verdict: ``dataset_drift`` when ``status`` is "ok", otherwise None and the ``reason``."""

    status: str  # "ok" | "cannot_judge"
    dataset_drift: bool | None
    drifted_share: float | None  # among the judged features
    drift_share_threshold: float
    features: tuple[FeatureDrift, ...]
    reason: str | None
    n_reference: int
    n_current: int
    model: str = ""
    reference_version: str | None = None

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_judged(self) -> int:
        return sum(f.status == "ok" for f in self.features)

    @property
    def n_drifted(self) -> int:
        return sum(bool(f.drifted) for f in self.features)

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(f"no drift result for feature '{name}'; features: {', '.join(f.feature for f in self.features)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (no NaN/inf, plain types), for platform records and MLflow."""
        doc = asdict(self)
        doc["features"] = [
            {**jsonable(asdict(f)), "score_kind": f.score_kind, "drift_if": f.drift_if}
            for f in self.features
        ]
        doc["drifted_share"] = jsonable(self.drifted_share)
        doc.update(n_features=self.n_features, n_judged=self.n_judged, n_drifted=self.n_drifted,
                   drifted_features=self.drifted_features)
        return doc


# --- resolution of method and threshold ------------------------------------------------------------------


def default_method(stats: FeatureStats, n_values: int | None) -> str:
    """Evidently's default method for a feature; ``n_values`` = distinct values of reference and current."""
    n_values = n_values if n_values is not None else (stats.n_distinct if stats.n_distinct is not None else 10**9)
    if stats.n <= SMALL_REFERENCE:
        if stats.kind == "num" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if stats.kind == "num":
        return "jensenshannon" if n_values <= 5 else "wasserstein"
    return "jensenshannon"


def resolve_method(
    stats: FeatureStats, policy: DriftPolicy, n_values: int | None
) -> tuple[str, float, bool, str | None]:
    """``(method, threshold, pinned, problem)`` for a feature under the model's drift policy."""
    name = stats.name
    feature_thresholds = policy.feature_thresholds
    pinned_method = policy.feature_methods.get(name)
    problem = None
    if pinned_method is not None:
        method = pinned_method
        if stats.kind not in METHODS[method][1]:
            fitting = ", ".join(m for m, spec in METHODS.items() if stats.kind in spec[1])
            problem = (f"method '{method}' pinned for feature '{name}' does not apply to a "
                       f"{'numeric' if stats.kind == 'num' else 'categorical'} feature; pin one of {fitting} in "
                       "drift.feature_methods")
    elif policy.method is not None and stats.kind in METHODS[policy.method][1]:
        method = policy.method
    else:
        method = default_method(stats, n_values)
    threshold = feature_thresholds.get(name, policy.threshold)
    pinned = pinned_method is not None or method == policy.method or threshold is not None
    if threshold is None:
        threshold = METHODS[method][0]
    return method, float(threshold), pinned, problem


# --- compute ---------------------------------------------------------------------------------------------


def _sorted_counts(s: np.ndarray) -> dict[Any, int]:
    import numpy as np

    if len(s) == 0:
        return {}
    starts = np.concatenate(([0], np.flatnonzero(np.diff(s)) + 1))
    sizes = np.diff(np.concatenate((starts, [len(s)])))
    return dict(zip(s[starts].tolist(), sizes.tolist()))


def _cannot(stats: FeatureStats | None, name: str, kind: str, policy: DriftPolicy, reason: str,
            n_current: int = 0, n_null: int = 0) -> FeatureDrift:
    if stats is not None:
        method, threshold, pinned, _ = resolve_method(stats, policy, None)
    else:
        fallback = "wasserstein" if kind == "num" else "jensenshannon"
        method = policy.feature_methods.get(name) or policy.method or fallback
        threshold = policy.threshold if policy.threshold is not None else METHODS[method][0]
        pinned = False
    return FeatureDrift(
        feature=name, kind=stats.kind if stats is not None else kind, method=method, threshold=threshold,
        score=None, drifted=None, status="cannot_judge", reason=reason,
        n_reference=stats.n if stats is not None else 0, n_current=n_current, n_null_current=n_null,
        pinned=pinned, exact=stats.exact if stats is not None else True,
    )


def feature_drift(stats: FeatureStats, column: pd.Series | None, policy: DriftPolicy) -> FeatureDrift:
    """Drift of one feature: ``column`` is the current window's column (None when missing)."""
    import numpy as np

    name = stats.name
    if stats.problem or stats.n == 0 or stats.values is None:
        return _cannot(stats, name, stats.kind, policy,
                       f"reference statistics unusable for '{name}': {stats.problem or 'no values'}; "
                       "fix the training data and rebuild the reference for this model version")
    min_values = policy.min_values
    if stats.n < min_values:
        return _cannot(stats, name, stats.kind, policy,
                       f"reference has only {stats.n} non-null values of '{name}' (policy min_values {min_values})")
    if column is None:
        return _cannot(stats, name, stats.kind, policy, f"feature '{name}' is missing from the current window")

    n_rows = int(len(column))
    cur_sorted = None
    if stats.kind == "num":
        raw, problem = numeric_values(column)
        if problem:
            return _cannot(stats, name, stats.kind, policy, f"wrong type: '{name}' {problem}", n_null=0)
        cur_sorted = sorted_finite(raw)
        n_cur = int(len(cur_sorted))
        cur_counts = None
    else:
        cur_counts, problem = categorical_counts(column, stats.type)
        if problem:
            return _cannot(stats, name, stats.kind, policy, f"wrong type: '{name}' {problem}")
        n_cur = int(sum(cur_counts.values()))
    n_null = n_rows - n_cur
    if n_cur == 0:
        return _cannot(stats, name, stats.kind, policy,
                       f"all {n_rows} values of '{name}' in the current window are null", 0, n_null)
    if n_cur < min_values:
        return _cannot(stats, name, stats.kind, policy,
                       f"only {n_cur} non-null values of '{name}' in the current window (policy min_values "
                       f"{min_values})", n_cur, n_null)

    # distinct values of reference + current decide between the small-value methods; count them only when it
    # matters (a numeric reference with more than 5 distinct values is past every cut-off already)
    n_values = stats.n_distinct
    if stats.kind == "cat":
        n_values = len(set(stats.counts()) | set(cur_counts))
    elif n_values is not None and n_values <= 5:
        n_values = int(len(np.union1d(stats.values, cur_sorted)))
    method, threshold, pinned, problem = resolve_method(stats, policy, n_values)
    if problem:
        return _cannot(stats, name, stats.kind, policy, problem, n_cur, n_null)

    score_error = 0.0
    if method == "ks":
        score = ks_pvalue(stats.values, stats.weights, cur_sorted, stats.exact)
        drifted = score <= threshold
    elif method == "wasserstein":
        score = wasserstein_normed(stats.values, stats.weights, cur_sorted, stats.std)
        score_error = stats.sketch_error
        drifted = score >= threshold
    elif method in ("chisquare", "z"):
        counts = cur_counts if cur_counts is not None else _sorted_counts(cur_sorted)
        score = (chisquare_pvalue if method == "chisquare" else z_pvalue)(stats.counts(), counts)
        drifted = score < threshold
    else:
        if stats.kind == "num" and stats.exact and len(stats.values) <= 20:
            cur_counts = _sorted_counts(cur_sorted)
        fn = jensenshannon_distance if method == "jensenshannon" else psi_value
        score = fn(stats, cur_sorted, cur_counts or {})
        drifted = score >= threshold
    if not math.isfinite(score):
        return _cannot(stats, name, stats.kind, policy, f"{method} gave no finite score for '{name}'", n_cur, n_null)
    return FeatureDrift(
        feature=name, kind=stats.kind, method=method, threshold=threshold, score=float(score),
        drifted=bool(drifted), status="ok", reason=None, n_reference=stats.n, n_current=n_cur,
        n_null_current=n_null, pinned=pinned, exact=stats.exact, score_error=score_error,
    )


def dataset_verdict(
    features: tuple[FeatureDrift, ...], drift_share: float
) -> tuple[str, bool | None, float | None, str | None]:
    """``(status, dataset_drift, drifted_share, reason)``: Evidently's ``share >= drift_share`` when every feature
    was judged; with unjudged features, a verdict only if no outcome of theirs could change it."""
    n_all = len(features)
    judged = [f for f in features if f.status == "ok"]
    if not judged:
        reason = ("no feature could be judged: " + "; ".join(f"{f.feature}: {f.reason}" for f in features)
                  if features else "the model declares no features")
        return "cannot_judge", None, None, reason
    n_drift = sum(bool(f.drifted) for f in judged)
    share = n_drift / len(judged)
    unjudged = [f.feature for f in features if f.status != "ok"]
    lower, upper = n_drift / n_all, (n_drift + len(unjudged)) / n_all
    if lower >= drift_share:
        drift = True
    elif upper < drift_share:
        drift = False
    else:
        return "cannot_judge", None, share, (
            f"{len(unjudged)} of {n_all} features could not be judged ({', '.join(unjudged)}); with them the drifted "
            f"share lies between {lower:.2f} and {upper:.2f}, on both sides of drift_share {drift_share:g}"
        )
    reason = None
    if unjudged:
        reason = (f"{len(unjudged)} of {n_all} features could not be judged ({', '.join(unjudged)}); the verdict holds "
                  "whatever they would show")
    return "ok", drift, share, reason


def compute_drift(reference: ReferenceStats, current: pd.DataFrame | None, model: ModelConfig) -> DriftResult:
    """Drift of the ``current`` window against ``reference`` under ``model.drift`` (see the module docstring)."""
    policy = model.drift
    n_current = 0 if current is None else int(len(current))
    ref_stats = reference.features
    window_problem = None
    if n_current == 0:
        window_problem = "the current window is empty (no logged predictions in the interval)"
    elif n_current < policy.min_rows:
        window_problem = (f"the current window has {n_current} rows, fewer than the policy's min_rows "
                          f"({policy.min_rows})")
    results = []
    for spec in model.features:
        stats = ref_stats.get(spec.name)
        kind = "num" if spec.type == "float" else "cat"
        if stats is None:
            results.append(_cannot(None, spec.name, kind, policy,
                                   f"no reference statistics for '{spec.name}' in reference version "
                                   f"{reference.version} (feature added after it was built); rebuild the reference"))
        elif window_problem:
            results.append(_cannot(stats, spec.name, kind, policy, window_problem))
        else:
            column = current[spec.name] if spec.name in current.columns else None
            try:
                results.append(feature_drift(stats, column, policy))
            except Exception as exc:  # noqa: BLE001 - one odd column must not take down the other features' verdicts
                log.exception("drift of feature '%s' failed", spec.name)
                results.append(_cannot(stats, spec.name, kind, policy,
                                       f"drift computation failed for '{spec.name}': {type(exc).__name__}: {exc}"))
    features = tuple(results)
    if window_problem:
        status, drift, share, reason = "cannot_judge", None, None, window_problem
    else:
        status, drift, share, reason = dataset_verdict(features, policy.drift_share)
    result = DriftResult(
        status=status, dataset_drift=drift, drifted_share=share, drift_share_threshold=policy.drift_share,
        features=features, reason=reason, n_reference=reference.n_rows, n_current=n_current,
        model=model.name, reference_version=reference.version,
    )
    log.info("drift %s: status=%s dataset_drift=%s share=%s (%d/%d judged features drifted)", model.name, status,
             drift, share, result.n_drifted, result.n_judged)
    return result
