"""Live model performance on matured windows, compared with the champion's offline baseline (pure, no Airflow).

Given the logged predictions of a window (store columns) and the outcomes known for them, compute the model's
metric (``model.metric``) per model version, per A/B arm and for the whole window, each with a confidence interval,
and decide whether the champion has decayed.

Confidence intervals come from :func:`evergreen.stats.metric_interval`, the one statistics module training
evaluation, the gate and the A/B analysis use too, at ``PerformancePolicy.confidence``: DeLong for ``roc_auc``,
Wilson for ``accuracy``, the normal interval of the mean per-row loss for ``log_loss``, and a seeded bootstrap of
:data:`evergreen.stats.MIN_DRAWS` draws for ``f1`` (:data:`evergreen.stats.CI_METHODS`). A group's record keeps
its form (``value``, ``ci_low``, ``ci_high``, ``method``: :class:`Estimate`, mapped from :class:`stats.Interval`).

The decay rule (precise): let ``m`` be the live metric with interval ``[lo, hi]`` and ``b`` the offline baseline
with interval ``[b_lo, b_hi]`` (both at ``PerformancePolicy.confidence``; a baseline without a logged interval has
zero width). For a metric where higher is better, the difference ``d = m - b`` has the approximate interval
``d +- sqrt((hi - m)^2 + (b - b_lo)^2)`` (root-sum-square of the half-widths on the sides that matter, i.e.
independent normal errors). **Decay** when the upper bound of that interval is below ``-tolerance``: even the most
favourable reading of the noise leaves a drop larger than the tolerance. Without a baseline interval this is
``hi < b - tolerance``. For ``log_loss`` (lower is better) the signs flip.

Windows that cannot be judged are recorded with the reason and never as a pass or a fail:

* ``immature`` -- not every label of the window has landed: the labels of predictions made on day ``D`` land on
  the landing days ``D .. D + label_delay_days``, and the window is mature only when ``ingest_feedback`` has
  recorded (an ``ingestion`` record, not a failure) every one of those days for every prediction day of the window
  (:func:`evergreen.monitor.maturity.label_arrival`). The calendar says nothing: a late or failed ingestion keeps the window immature, and the
  reason names the missing days. (With no champion the status is ``cannot_judge``, the reason says both.)
* ``too_small`` -- fewer usable labelled rows than ``min_rows`` or a labelled share under ``min_labelled_share``;
* ``cannot_judge`` -- an empty window, a missing / all-null / non-numeric score column, a single-class label
  window, no champion, no baseline.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.jsonable import jsonable
from evergreen.monitor.maturity import LabelArrival

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen import stats

    from evergreen.config import ModelConfig

log = logging.getLogger(__name__)

OK = "ok"
DECAY = "decay"
IMMATURE = "immature"
TOO_SMALL = "too_small"
CANNOT_JUDGE = "cannot_judge"
NO_BASELINE = "no_baseline"  # group level only: measured, nothing to compare with



@dataclass(frozen=True)
class Baseline:
    """A model version's offline metric on its holdout, as its training run logged it."""

    version: str
    metric: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    run_id: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    method: str


@dataclass
class GroupResult:
    """The metric of one slice of the window: ``by`` is "all", "version" or "arm"."""

    by: str
    value: str
    n_predictions: int
    n_labelled: int
    n_usable: int
    n_positive: int
    status: str
    reason: str = ""
    estimate: Estimate | None = None
    baseline: Baseline | None = None
    difference: float | None = None
    difference_ci_low: float | None = None
    difference_ci_high: float | None = None

    @property
    def labelled_share(self) -> float:
        return self.n_labelled / self.n_predictions if self.n_predictions else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["labelled_share"] = self.labelled_share
        return jsonable(out)


@dataclass
class PerformanceResult:
    model: str
    metric: str
    window_start: dt.date
    window_end: dt.date  # exclusive
    as_of: dt.date
    status: str
    reason: str
    champion_version: str | None
    tolerance: float
    confidence: float
    ci_method: str
    n_predictions: int = 0
    n_labelled: int = 0
    n_usable: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    groups: list[GroupResult] = field(default_factory=list)
    labels: dict[str, Any] = field(default_factory=dict)  # LabelArrival.to_dict(): which landing days were ingested

    @property
    def decay(self) -> bool:
        return self.status == DECAY

    @property
    def judged(self) -> bool:
        """True when the result is a verdict (ok or decay), False for immature / too_small / cannot_judge."""
        return self.status in (OK, DECAY)

    @property
    def labelled_share(self) -> float:
        return self.n_labelled / self.n_predictions if self.n_predictions else 0.0

    def group(self, by: str, value: str) -> GroupResult | None:
        return next((g for g in self.groups if g.by == by and g.value == value), None)

    @property
    def champion(self) -> GroupResult | None:
        return None if self.champion_version is None else self.group("version", self.champion_version)

    def to_dict(self) -> dict[str, Any]:
        champion = self.champion
        return jsonable(
            {
                "model": self.model,
                "metric": self.metric,
                "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
                "as_of": self.as_of.isoformat(),
                "labels": dict(self.labels),
                "status": self.status,
                "reason": self.reason,
                "decay": self.decay,
                "judged": self.judged,
                "champion_version": self.champion_version,
                "tolerance": self.tolerance,
                "confidence": self.confidence,
                "ci_method": self.ci_method,
                "n_predictions": self.n_predictions,
                "n_labelled": self.n_labelled,
                "n_usable": self.n_usable,
                "labelled_share": self.labelled_share,
                "excluded": dict(self.excluded),
                "champion": champion.to_dict() if champion is not None else None,
                "groups": [g.to_dict() for g in self.groups],
            }
        )


# --- windows ------------------------------------------------------------------------------------------------


def evaluation_window(interval_start: dt.date, interval_end: dt.date, policy: Any) -> tuple[dt.date, dt.date]:
    """The prediction days a run for ``[interval_start, interval_end)`` evaluates: ``window_days`` days ending
    ``label_delay_days`` before the interval's end, so their labels have had the delay to arrive."""
    end = interval_end - dt.timedelta(days=policy.label_delay_days)
    return end - dt.timedelta(days=policy.window_days), end



def _estimate(interval: stats.Interval) -> Estimate:
    return Estimate(interval.value, interval.low, interval.high, interval.method)


def metric_estimate(metric: str, labels: np.ndarray, values: np.ndarray, confidence: float,
                    positive: Any = 1) -> Estimate:
    """The metric of labelled rows with its interval, by :func:`evergreen.stats.metric_interval` (seeded, so the
    same rows give the same record). ``values`` is the score for the score metrics, else the predicted class."""
    from evergreen import stats

    kind = "score" if metric in stats.SCORE_METRICS else "pred"
    return _estimate(stats.metric_interval(metric, labels, positive=positive, confidence=confidence,
                                           **{kind: values}))


def compare(estimate: Estimate, baseline: Baseline, metric: str, tolerance: float) -> tuple[str, float, float, float]:
    """``(status, difference, difference_ci_low, difference_ci_high)`` by the module's decay rule."""
    from evergreen import stats

    m, b = estimate.value, float(baseline.value)
    d = m - b
    base_lo = b - baseline.ci_low if baseline.ci_low is not None else 0.0
    base_hi = baseline.ci_high - b if baseline.ci_high is not None else 0.0
    # Half-width of the difference on each side: live noise on that side, baseline noise on the opposite side.
    up = math.hypot(estimate.ci_high - m, max(base_lo, 0.0))
    down = math.hypot(m - estimate.ci_low, max(base_hi, 0.0))
    lo, hi = d - down, d + up
    if metric in stats.LOWER_IS_BETTER:
        decayed = lo > tolerance
    else:
        decayed = hi < -tolerance
    return (DECAY if decayed else OK), d, lo, hi


# --- input checks -------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    frame: pd.DataFrame  # labelled rows with a usable value column
    labelled: pd.DataFrame  # every labelled row (model_version, arm), usable or not
    n_predictions: int
    n_labelled: int
    excluded: dict[str, int]
    problem: str = ""  # non-empty: the whole window cannot be judged


def _prepare(predictions: pd.DataFrame, outcomes: pd.DataFrame, model: ModelConfig) -> _Prepared:
    import numpy as np
    import pandas as pd

    from evergreen import stats

    metric = model.metric
    column = "score" if metric in stats.SCORE_METRICS else "prediction"
    n = len(predictions)
    empty = pd.DataFrame(columns=["model_version", "arm", "label", "value"])
    none = empty[["model_version", "arm"]]
    if "request_id" not in predictions.columns:
        return _Prepared(empty, none, n, 0, {}, "the predictions have no 'request_id' column, so outcomes cannot be "
                                           "joined; check the store's prediction log")
    if column not in predictions.columns:
        return _Prepared(empty, none, n, 0, {}, f"the predictions have no '{column}' column, which {metric} needs; "
                                           "check that the serving app logs it")
    out = outcomes[["request_id", "label"]] if {"request_id", "label"} <= set(outcomes.columns) else None
    if out is None:
        return _Prepared(empty, none, n, 0, {}, "the outcomes have no 'request_id'/'label' columns; check the store")
    frame = pd.DataFrame(
        {
            "request_id": predictions["request_id"].astype(str).to_numpy(),
            "model_version": (predictions["model_version"] if "model_version" in predictions
                              else pd.Series([None] * n)).astype(object).to_numpy(),
            "arm": (predictions["arm"] if "arm" in predictions else pd.Series([None] * n)).astype(object).to_numpy(),
            "raw": predictions[column].to_numpy(),
        }
    )
    frame["model_version"] = frame["model_version"].where(frame["model_version"].notna(), "unknown").astype(str)
    frame["arm"] = frame["arm"].where(frame["arm"].notna(), "unknown").astype(str)
    labels = out.drop_duplicates("request_id", keep="last").assign(request_id=lambda f: f["request_id"].astype(str))
    frame = frame.merge(labels, on="request_id", how="left")
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    labelled = frame[frame["label"].notna()]
    excluded: dict[str, int] = {}
    classes = set(map(float, model.label.classes))
    bad_label = ~labelled["label"].isin(classes)
    if bad_label.any():
        excluded["label_not_a_class"] = int(bad_label.sum())
    labelled = labelled[~bad_label]

    raw = labelled["raw"]
    value = pd.to_numeric(raw, errors="coerce").astype("float64")
    not_null = raw.notna()
    non_numeric = not_null & value.isna()
    non_finite = value.notna() & ~np.isfinite(value.fillna(0.0))
    finite = value.notna() & np.isfinite(value)
    if column == "prediction":  # accuracy / f1 read a class label
        out_of_range = finite & ~value.isin(classes)
    elif metric == "log_loss":  # a probability
        out_of_range = finite & ((value < 0) | (value > 1))
    else:  # the AUC only ranks scores: any finite number is usable
        out_of_range = pd.Series(False, index=labelled.index)
    for name, mask in ((f"{column}_null", ~not_null), (f"{column}_not_numeric", non_numeric),
                       (f"{column}_not_finite", non_finite), (f"{column}_out_of_range", out_of_range)):
        if mask.any():
            excluded[name] = int(mask.sum())
    usable = not_null & ~non_numeric & ~non_finite & ~out_of_range
    result = labelled.loc[usable, ["model_version", "arm", "label"]].assign(value=value[usable])

    problem = ""
    all_scores = predictions[column]
    if n and all_scores.isna().all():
        problem = f"column '{column}' is null in every one of the {n} predictions; check the serving app's logging"
    elif len(labelled) and not usable.any() and (non_numeric.any() or out_of_range.any() or non_finite.any()):
        sample = raw[non_numeric | out_of_range | non_finite].iloc[0]
        what = "out of range for" if out_of_range.any() and not non_numeric.any() else "not usable as"
        problem = (f"column '{column}' holds values {what} a {metric} input (e.g. {sample!r}, dtype "
                   f"{all_scores.dtype}); no labelled row is usable; fix the serving app's logging")
    return _Prepared(result, labelled[["model_version", "arm"]], n, int(frame["label"].notna().sum()), excluded,
                     problem)


# --- the evaluation -----------------------------------------------------------------------------------------


def _judge_group(by: str, value: str, frame: pd.DataFrame, n_predictions: int, n_labelled: int, model: ModelConfig,
                 baseline: Baseline | None, known: Estimate | None = None) -> GroupResult:
    policy = model.performance
    n_usable = len(frame)
    positive = model.label.positive_class
    n_pos = int((frame["label"] == positive).sum())
    g = GroupResult(by, value, n_predictions, n_labelled, n_usable, n_pos, status=CANNOT_JUDGE, baseline=baseline)
    share = n_usable / n_predictions if n_predictions else 0.0
    if n_usable < policy.min_rows or share < policy.min_labelled_share:
        g.status = TOO_SMALL
        g.reason = (f"{n_usable} usable labelled rows of {n_predictions} predictions (share {share:.2f}); the policy "
                    f"needs at least {policy.min_rows} rows and a share of {policy.min_labelled_share:.2f}")
        return g
    if n_pos == 0 or n_pos == n_usable:
        negatives = model.label.negative_classes
        only = positive if n_pos else (negatives[0] if len(negatives) == 1 else f"not {positive}")
        why = "is undefined" if model.metric == "roc_auc" else "is not comparable with a two-class holdout baseline"
        g.reason = f"every one of the {n_usable} labels is {only}: {model.metric} on a single class {why}"
        return g
    if known is not None:  # the same rows as a slice already measured (one version or arm served everything)
        est = known
    else:  # the score metrics read the score; accuracy and f1 the logged class, both against label.positive
        est = metric_estimate(model.metric, frame["label"].to_numpy(), frame["value"].to_numpy(), policy.confidence,
                       positive)
    g.estimate = est
    if baseline is None or baseline.value is None or not math.isfinite(float(baseline.value)):
        g.status = NO_BASELINE
        g.reason = (f"{model.metric} {est.value:.4f} [{est.ci_low:.4f}, {est.ci_high:.4f}]; no offline baseline "
                    f"for this slice")
        return g
    g.status, g.difference, g.difference_ci_low, g.difference_ci_high = compare(est, baseline, model.metric,
                                                                                 policy.tolerance)
    verb = "decayed" if g.status == DECAY else "within tolerance"
    g.reason = (f"{model.metric} {est.value:.4f} [{est.ci_low:.4f}, {est.ci_high:.4f}] vs baseline "
                f"{baseline.value:.4f} (version {baseline.version}): difference {g.difference:+.4f} "
                f"[{g.difference_ci_low:+.4f}, {g.difference_ci_high:+.4f}], tolerance {policy.tolerance}: {verb}")
    return g


def _no_champion(model: ModelConfig) -> str:
    return (f"no champion: model '{model.name}' has no version with alias 'champion' in the registry, so there is "
            "nothing to judge")


def evaluate_performance(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    model: ModelConfig,
    *,
    window_start: dt.date,
    window_end: dt.date,
    as_of: dt.date,
    labels: LabelArrival,
    champion_version: str | None,
    baselines: Mapping[str, Baseline] | None = None,
) -> PerformanceResult:
    """Judge the champion on the window ``[window_start, window_end)`` of predictions.

    ``labels`` says whether the window's labels have landed (:func:`evergreen.monitor.maturity.label_arrival` from the ``ingestion`` records);
    only then is anything measured. ``as_of`` (the run's interval end) is recorded, never used to decide.
    ``outcomes`` are the known outcomes of those predictions (joined by request id; extra rows are ignored).
    ``baselines`` maps a model version to its offline baseline; each version (and each arm served by a single
    version) is compared with its own, and the verdict is the champion version's.
    """
    from evergreen import stats

    policy = model.performance
    baselines = dict(baselines or {})
    champion_version = None if champion_version is None else str(champion_version)
    result = PerformanceResult(
        model=model.name, metric=model.metric, window_start=window_start, window_end=window_end, as_of=as_of,
        status=CANNOT_JUDGE, reason="", champion_version=champion_version, tolerance=policy.tolerance,
        confidence=policy.confidence, ci_method=stats.CI_METHODS.get(model.metric, "?"), n_predictions=len(predictions),
    )
    window = f"[{window_start}, {window_end})"
    if (labels.window_start, labels.window_end) != (window_start, window_end):
        raise ValueError(f"evaluate_performance: label arrival of [{labels.window_start}, {labels.window_end}) "
                         f"given for window {window}")
    result.labels = labels.to_dict()
    if not labels.mature:
        # Partial labels would bias every metric: measure nothing until they are all in.
        if champion_version is None:
            result.reason = (f"{_no_champion(model)}; nor are the window's labels all in yet: {labels.describe()}")
        else:
            result.status = IMMATURE
            result.reason = f"labels not all in: {labels.describe()}"
        return result
    if predictions.empty:
        result.reason = f"empty window: no predictions logged for model '{model.name}' in {window}"
        return result

    prep = _prepare(predictions, outcomes, model)
    result.n_labelled, result.excluded, result.n_usable = prep.n_labelled, prep.excluded, len(prep.frame)
    if prep.problem:
        result.reason = prep.problem
        return result

    frame = prep.frame
    pred_counts = {
        "version": predictions["model_version"].astype(object).where(predictions["model_version"].notna(), "unknown")
        .astype(str).value_counts().to_dict() if "model_version" in predictions else {"unknown": len(predictions)},
        "arm": predictions["arm"].astype(object).where(predictions["arm"].notna(), "unknown")
        .astype(str).value_counts().to_dict() if "arm" in predictions else {"unknown": len(predictions)},
    }
    # A slice is compared with a baseline only when one version served it: a mix has no single offline metric.
    served = sorted(pred_counts["version"])
    result.groups.append(_judge_group("all", "all", frame, prep.n_predictions, prep.n_labelled, model,
                                      baselines.get(served[0]) if len(served) == 1 else None))
    for by, col in (("version", "model_version"), ("arm", "arm")):
        for value in sorted(pred_counts[by]):
            part = frame[frame[col] == value]
            if by == "version":
                base = baselines.get(value)
            else:
                versions = part["model_version"].unique()
                base = baselines.get(str(versions[0])) if len(versions) == 1 else None
            n_labelled = int((prep.labelled[col] == value).sum())
            whole = result.groups[0].estimate if len(part) == len(frame) else None
            result.groups.append(_judge_group(by, value, part, int(pred_counts[by][value]), n_labelled, model, base,
                                              whole))

    share = result.n_usable / result.n_predictions if result.n_predictions else 0.0
    if result.n_usable < policy.min_rows or share < policy.min_labelled_share:
        result.status = TOO_SMALL
        result.reason = (f"{result.n_usable} usable labelled rows of {result.n_predictions} predictions in {window} "
                         f"(labelled share {share:.2f}); the policy needs {policy.min_rows} rows and a share of "
                         f"{policy.min_labelled_share:.2f} -- if labels are late, check that ingest_feedback_"
                         f"{model.name} ran for the days after the window")
        if result.excluded:
            result.reason += f"; excluded rows: {result.excluded}"
        return result
    if champion_version is None:
        result.reason = f"{_no_champion(model)}; the window's metrics per version and arm are recorded"
        return result
    champion = result.champion
    if champion is None:
        result.status = TOO_SMALL
        result.reason = (f"champion version {champion_version} served no predictions in {window} (versions seen: "
                         f"{', '.join(sorted(pred_counts['version']))})")
        return result
    if champion.status == NO_BASELINE:
        result.status = CANNOT_JUDGE
        result.reason = (f"champion version {champion_version} has no offline baseline: its training run logged no "
                         f"'holdout_{model.metric}'; {champion.reason}")
        return result
    result.status = champion.status
    result.reason = f"champion version {champion_version}: {champion.reason}"
    return result
