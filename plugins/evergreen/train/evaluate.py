"""How good a trained model is on its holdout: the config metric with a bootstrap interval, per slice, and the
sanity floor a version must clear before it is registered.

The interval is a percentile bootstrap with a fixed seed, so the same model on the same holdout always gives the
same interval. Resamples are computed as row weights (:func:`weighted_metric_fn`), not copies: 200 of them over
a large holdout stay cheap. The positive class is the config's ``label.positive``
(:attr:`evergreen.config.LabelSpec.positive_class`, the rule live monitoring uses too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.config import ModelConfig
from evergreen.train.spec import LABEL, METRICS_NEED_SCORES, TrainingError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

BOOTSTRAP_RESAMPLES = 200
CONFIDENCE = 0.95
MIN_SLICE_ROWS = 30


@dataclass(frozen=True)
class SliceMetric:
    feature: str
    value: str
    rows: int
    positives: int
    metric: float | None  # None when the slice is too small or single-class


@dataclass(frozen=True)
class Evaluation:
    metric: str
    value: float
    ci_low: float
    ci_high: float
    rows: int
    positives: int
    sanity_floor: float
    greater_is_better: bool
    passed: bool
    confidence: float = CONFIDENCE
    resamples: int = BOOTSTRAP_RESAMPLES
    slices: list[SliceMetric] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        data = json.loads(text)
        data["slices"] = [SliceMetric(**s) for s in data.get("slices", [])]
        return cls(**data)


def _positive_scores(model: ModelConfig, pipeline: Pipeline, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(score of the positive class, predicted class) -- the positive class is the config's ``label.positive``."""
    import numpy as np

    classes = list(pipeline.classes_)
    positive = model.label.positive_class
    if positive not in classes:
        raise TrainingError(f"model '{model.name}': the fitted estimator knows classes {classes}, not the positive "
                            f"class {positive!r} (label.positive); check label.classes and the training labels")
    if hasattr(pipeline, "predict_proba"):
        proba = pipeline.predict_proba(X)
        score = proba[:, classes.index(positive)]
        pred = np.asarray(classes)[proba.argmax(axis=1)]
    else:
        pred = pipeline.predict(X)
        score = (pred == positive).astype("float64")
    return score, pred


def metric_value(metric: str, y: np.ndarray, score: np.ndarray, pred: np.ndarray, positive: Any) -> float:
    """The point metric, computed by scikit-learn."""
    from sklearn import metrics

    yb = (y == positive).astype("int64")
    if metric == "roc_auc":
        return float(metrics.roc_auc_score(yb, score))
    if metric == "accuracy":
        return float(metrics.accuracy_score(y, pred))
    if metric == "log_loss":
        return float(metrics.log_loss(yb, score, labels=[0, 1]))
    if metric == "f1":
        return float(metrics.f1_score(yb, (pred == positive).astype("int64"), zero_division=0.0))
    raise TrainingError(f"metric '{metric}' is not supported; use one of roc_auc, accuracy, log_loss, f1")


def weighted_metric_fn(
    metric: str, y: np.ndarray, score: np.ndarray, pred: np.ndarray, positive: Any
) -> Callable[[np.ndarray], float]:
    """``f(weights) -> metric`` with per-row weights, precomputed so a bootstrap resample is O(n).

    A bootstrap resample is the same rows with multiplicities, so weighting avoids copying and re-sorting the
    holdout 200 times (with unit weights it equals :func:`metric_value`).
    """
    import numpy as np

    yb = (y == positive).astype("float64")
    if metric == "roc_auc":
        # Mann-Whitney with ties: sort the scores once, group equal scores, count weighted negatives below.
        _, group = np.unique(score, return_inverse=True)
        size = int(group.max()) + 1 if len(group) else 0

        def auc(w: np.ndarray) -> float:
            pos = np.bincount(group, weights=w * yb, minlength=size)
            neg = np.bincount(group, weights=w * (1.0 - yb), minlength=size)
            denom = pos.sum() * neg.sum()
            if denom == 0:
                return float("nan")
            below = np.cumsum(neg) - neg
            return float(np.dot(pos, below + 0.5 * neg) / denom)

        return auc
    if metric == "accuracy":
        correct = (pred == y).astype("float64")
        return lambda w: float(np.dot(w, correct) / w.sum())
    if metric == "log_loss":
        p = np.clip(score, np.finfo("float64").eps, 1 - np.finfo("float64").eps)
        loss = -(yb * np.log(p) + (1 - yb) * np.log(1 - p))
        return lambda w: float(np.dot(w, loss) / w.sum())
    if metric == "f1":
        pp = (pred == positive).astype("float64")
        tp, fp, fn = pp * yb, pp * (1 - yb), (1 - pp) * yb

        def f1(w: np.ndarray) -> float:
            t = np.dot(w, tp)
            d = 2 * t + np.dot(w, fp) + np.dot(w, fn)
            return float(2 * t / d) if d else 0.0

        return f1
    raise TrainingError(f"metric '{metric}' is not supported; use one of roc_auc, accuracy, log_loss, f1")


def bootstrap_ci(
    fn: Callable[[np.ndarray], float], n: int, *, seed: int, resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn`` over ``n`` rows (fixed seed: the same holdout gives the same CI)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype("float64")
        values.append(fn(w))
    arr = np.asarray(values)
    arr = arr[~np.isnan(arr)]
    if not len(arr):
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    return float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))


def _slice_groups(model: ModelConfig, holdout: pd.DataFrame, feature: str) -> Iterator[tuple[str, np.ndarray]]:
    import numpy as np
    import pandas as pd

    col = holdout[feature]
    if model.feature(feature).type in ("int", "float"):
        # Quartiles of the holdout: numeric slices need bins, and quartiles keep each bin large enough to score.
        edges = np.unique(np.nanquantile(col.astype("float64"), [0, 0.25, 0.5, 0.75, 1]))
        bins = pd.cut(col.astype("float64"), edges, include_lowest=True, duplicates="drop")
        for interval in bins.cat.categories:
            yield str(interval), (bins == interval).to_numpy()
    else:
        values = col.astype(object).where(col.notna(), None)
        for value in sorted(values.dropna().unique().tolist(), key=str):
            yield str(value), (values == value).to_numpy()
    if col.isna().any():
        yield "<missing>", col.isna().to_numpy()


def evaluate(model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame) -> Evaluation:
    """Holdout metric with a bootstrap CI, per-slice metrics, and the sanity-floor verdict."""
    import numpy as np

    y = holdout[LABEL].to_numpy()
    positive = model.label.positive_class
    score, pred = _positive_scores(model, pipeline, holdout[model.feature_names])
    value = metric_value(model.metric, y, score, pred, positive)
    ci_low, ci_high = bootstrap_ci(
        weighted_metric_fn(model.metric, y, score, pred, positive), len(y), seed=model.training.seed
    )
    slices: list[SliceMetric] = []
    for feature in model.training.slices:
        for name, mask in _slice_groups(model, holdout, feature):
            ys = y[mask]
            rows, positives = int(mask.sum()), int((ys == positive).sum())
            scorable = rows >= MIN_SLICE_ROWS and (model.metric not in METRICS_NEED_SCORES or 0 < positives < rows)
            metric = metric_value(model.metric, ys, score[mask], pred[mask], positive) if scorable else None
            slices.append(SliceMetric(feature, name, rows, positives, metric))
    greater = model.metric != "log_loss"
    floor = model.training.sanity_floor
    passed = bool(np.isfinite(value) and (value >= floor if greater else value <= floor))
    evaluation = Evaluation(
        metric=model.metric, value=value, ci_low=ci_low, ci_high=ci_high, rows=len(y),
        positives=int((y == positive).sum()), sanity_floor=floor, greater_is_better=greater, passed=passed,
        slices=slices,
    )
    log.info(
        "%s holdout %s=%.4f [%.4f, %.4f] on %s rows; sanity floor %s: %s",
        model.name, model.metric, value, ci_low, ci_high, len(y), floor, "passed" if passed else "MISSED",
    )
    return evaluation
