"""How good a trained model is on its holdout: the config metric with its interval, per slice, and the sanity
floor a version must clear before it is registered.

The metric and its interval come from :mod:`evergreen.stats`, the module live monitoring, the gate and the A/B
analysis use: DeLong for ROC AUC, Wilson for accuracy, a normal interval for log loss, and a seeded bootstrap of
:data:`evergreen.stats.MIN_DRAWS` draws for F1, so the same model on the same holdout always gives the same
interval. The confidence is ``performance.confidence``: the holdout interval is the version's baseline, and live
performance compares with it at that confidence. The positive class is the config's ``label.positive``
(:attr:`evergreen.config.LabelSpec.positive_class`, the rule live monitoring uses too).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.config import ModelConfig
from evergreen.train.spec import LABEL, METRICS_NEED_SCORES, TrainingError

if TYPE_CHECKING:
    import numpy as np

    from evergreen import stats
    import pandas as pd
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

CONFIDENCE = 0.95  # the default of performance.confidence
LOWER_IS_BETTER = frozenset({"log_loss"})  # evergreen.stats.LOWER_IS_BETTER, without importing numpy here
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
    ci_method: str = ""  # evergreen.stats.CI_METHODS[metric]
    draws: int | None = None  # set when the interval is a bootstrap (with its seed)
    seed: int | None = None
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
    """The point metric (:func:`evergreen.stats.metric_value`, equal to scikit-learn's)."""
    from evergreen import stats  # numpy: never at DAG parse time (dags/retrain.py imports register, which imports us)

    try:
        return stats.metric_value(metric, y, score, pred, positive=positive)
    except ValueError as err:
        raise TrainingError(str(err)) from None


def holdout_interval(model: ModelConfig, y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> stats.Interval:
    """The metric on the holdout with its interval: :func:`evergreen.stats.metric_interval` at
    ``performance.confidence``, seeded with ``training.seed``, :data:`evergreen.stats.MIN_DRAWS` draws if it is a
    bootstrap."""
    from evergreen import stats

    try:
        return stats.metric_interval(model.metric, y, score, pred, confidence=model.performance.confidence,
                                     positive=model.label.positive_class, draws=stats.MIN_DRAWS,
                                     seed=model.training.seed)
    except ValueError as err:
        raise TrainingError(f"model '{model.name}': holdout {model.metric} of {len(y)} rows: {err}") from None


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
    """Holdout metric with its interval (:func:`holdout_interval`), per-slice metrics, and the sanity-floor verdict."""
    import numpy as np

    y = holdout[LABEL].to_numpy()
    positive = model.label.positive_class
    score, pred = _positive_scores(model, pipeline, holdout[model.feature_names])
    interval = holdout_interval(model, y, score, pred)
    value, ci_low, ci_high = interval.value, interval.low, interval.high
    slices: list[SliceMetric] = []
    for feature in model.training.slices:
        for name, mask in _slice_groups(model, holdout, feature):
            ys = y[mask]
            rows, positives = int(mask.sum()), int((ys == positive).sum())
            scorable = rows >= MIN_SLICE_ROWS and (model.metric not in METRICS_NEED_SCORES or 0 < positives < rows)
            metric = metric_value(model.metric, ys, score[mask], pred[mask], positive) if scorable else None
            slices.append(SliceMetric(feature, name, rows, positives, metric))
    greater = model.metric not in LOWER_IS_BETTER
    floor = model.training.sanity_floor
    passed = bool(np.isfinite(value) and (value >= floor if greater else value <= floor))
    evaluation = Evaluation(
        metric=model.metric, value=value, ci_low=ci_low, ci_high=ci_high, rows=len(y),
        positives=int((y == positive).sum()), sanity_floor=floor, greater_is_better=greater, passed=passed,
        confidence=interval.confidence, ci_method=interval.method, draws=interval.draws, seed=interval.seed,
        slices=slices,
    )
    log.info(
        "%s holdout %s=%.4f [%.4f, %.4f] on %s rows; sanity floor %s: %s",
        model.name, model.metric, value, ci_low, ci_high, len(y), floor, "passed" if passed else "MISSED",
    )
    return evaluation
