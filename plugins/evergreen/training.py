"""Training: what the steps of the Kubeflow training pipeline do (prepare, train, evaluate, register).

The pipeline (``include/pipelines/training.py``) is thin: each component calls one ``*_step`` function here with
strings and artifact paths. The same logic is callable in one process (:func:`run_training`), which the bench
compares against the pipeline and the tests use as a fast path.

- **prepare** reads the labelled lake partitions of the training window ``[start, end)``, fails fast on bad input
  (:class:`TrainingDataError`, :class:`HyperparameterError`), splits train/holdout by a hash of the request id (a
  request lands on the same side in every retrain, so champion and challenger are compared on rows neither saw)
  and fingerprints the training content.
- **train** fits a scikit-learn ``Pipeline`` built from the model config (a ``ColumnTransformer`` over the
  declared features, then the estimator of ``training.estimator`` with the config's hyper-parameters overridden by
  the run's).
- **evaluate** computes the config metric on the holdout with a bootstrap confidence interval (fixed seed) and per
  configured slice, and checks ``training.sanity_floor``.
- **register** logs the model to MLflow (skops format, signature, input example) in the experiment
  ``evergreen/<model>/training`` and creates a version of the registered model ``<model>`` tagged as a candidate
  with its lineage.

Models never go through pickle: they are saved with skops, and :func:`load_model` loads a registered version
with a trust list fixed by the platform (:data:`TRUSTED_TYPES`), not the one the artifact declares. This is the
loader to use where ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (the platform's setting): MLflow 3.17 refuses
every sklearn flavour then, skops included, because a crafted MLmodel file could trust anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib
import json
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.config import ConfigError, ModelConfig, load_config
from evergreen.paths import REPO_ROOT

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

LABEL = "label"  # the label column of the lake's labelled partitions (shared lake layout)
REQUEST_ID = "request_id"
STATUS_CANDIDATE = "candidate"
TAG = "evergreen."
BOOTSTRAP_RESAMPLES = 200
CONFIDENCE = 0.95
MIN_SLICE_ROWS = 30
# Types outside skops' defaults that Evergreen models may contain, reviewed by hand: plain data holders of numpy
# and scikit-learn's tree models (linear models, naive Bayes and the feature step need none beyond numpy.dtype).
# A model needing anything else is refused at save time, so the list stored with a version is a subset of this.
TRUSTED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    }
)
_METRICS_NEED_SCORES = {"roc_auc", "log_loss"}


class TrainingError(ValueError):
    """Training cannot proceed; the message names the window, partition or parameter and what to do."""


class TrainingDataError(TrainingError):
    """The training window's data is unusable (empty, too small, single class, missing features)."""


class HyperparameterError(TrainingError):
    """A hyper-parameter is unknown to the estimator or has a value it rejects."""


class UntrustedModelError(TrainingError):
    """A model artifact is not a skops file, or holds types outside :data:`TRUSTED_TYPES`."""


# --- small typed values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A training window of lake days, ``start <= day < end`` (UTC dates)."""

    start: dt.date
    end: dt.date

    @classmethod
    def parse(cls, start: str | dt.date, end: str | dt.date) -> Window:
        try:
            s = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
            e = end if isinstance(end, dt.date) else dt.date.fromisoformat(str(end))
        except ValueError:
            raise TrainingDataError(
                f"training window '{start}/{end}': dates must be YYYY-MM-DD (start inclusive, end exclusive)"
            ) from None
        if e <= s:
            raise TrainingDataError(f"training window '{s}/{e}': end must be after start (the end day is excluded)")
        return cls(s, e)

    @property
    def tag(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def __str__(self) -> str:
        return self.tag


@dataclass(frozen=True)
class MlflowTarget:
    """Where register writes: explicit URIs (resolved from the MLflow Connection by the caller, never Airflow here)."""

    tracking_uri: str
    registry_uri: str = ""
    artifact_location: str = ""


@dataclass(frozen=True)
class Lineage:
    """What ties a version to the data and the runs that made it; written as ``evergreen.*`` version tags."""

    window: Window
    fingerprint: str
    holdout_uri: str
    training_rows: int
    hyperparameters: dict[str, Any]
    airflow_dag_id: str = ""
    airflow_run_id: str = ""
    kfp_run_id: str = ""


@dataclass(frozen=True)
class Prepared:
    window: Window
    train: pd.DataFrame  # features + label
    holdout: pd.DataFrame  # every lake column of the holdout rows
    fingerprint: str
    partitions: list[str]
    hyperparameters: dict[str, Any]


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


@dataclass(frozen=True)
class Registered:
    model: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    reused: bool = False  # True when a re-run of the same Airflow run found its version already registered


@dataclass(frozen=True)
class TrainingResult:
    prepared: Prepared
    evaluation: Evaluation
    registered: Registered | None  # None when the sanity floor failed


# --- hyper-parameters and the scikit-learn pipeline --------------------------------------------------------


def parse_hyperparameters(overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The run's hyper-parameter overrides: a JSON object (the pipeline parameter) or a mapping."""
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    try:
        value = json.loads(overrides)
    except json.JSONDecodeError as exc:
        raise HyperparameterError(f"hyper-parameter overrides {overrides!r}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise HyperparameterError(
            f"hyper-parameter overrides {overrides!r}: expected a JSON object like {{\"max_depth\": 6}}"
        )
    return value


def resolve_hyperparameters(model: ModelConfig, overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's hyper-parameters with the run's overrides on top."""
    return {**model.training.hyperparameters, **parse_hyperparameters(overrides)}


def _estimator_class(model: ModelConfig) -> type:
    path = model.training.estimator
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise TrainingError(
            f"model '{model.name}': training.estimator '{path}' cannot be imported; use a dotted path to a "
            f"scikit-learn classifier such as sklearn.ensemble.RandomForestClassifier ({model.source})"
        ) from None


def _origin(model: ModelConfig, name: str, overrides: Mapping[str, Any]) -> str:
    if name in overrides:
        return "the run's hyper-parameter overrides"
    return f"training.hyperparameters in {model.source or 'the model config'}"


def build_estimator(model: ModelConfig, overrides: str | Mapping[str, Any] | None = None) -> Any:
    """The configured estimator with its hyper-parameters, validated before any data is read."""
    cls = _estimator_class(model)
    extra = parse_hyperparameters(overrides)
    params = {**model.training.hyperparameters, **extra}
    accepted = set(cls().get_params(deep=False))
    for name in params:
        if name not in accepted:
            raise HyperparameterError(
                f"hyper-parameter '{name}' (from {_origin(model, name, extra)}) is not accepted by "
                f"{model.training.estimator}; accepted: {', '.join(sorted(accepted))}"
            )
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = model.training.seed  # the same data and config give the same model
    estimator = cls(**params)
    validate = getattr(estimator, "_validate_params", None)  # scikit-learn's own constraint check, as fit runs it
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise _hyperparameter_error(model, exc, extra) from None
    if model.metric in _METRICS_NEED_SCORES and not hasattr(estimator, "predict_proba"):
        raise TrainingError(
            f"model '{model.name}': metric '{model.metric}' needs probabilities but {model.training.estimator} "
            "has no predict_proba; choose a probabilistic classifier"
        )
    return estimator


def _hyperparameter_error(model: ModelConfig, exc: Exception, overrides: Mapping[str, Any]) -> HyperparameterError:
    found = re.search(r"The '(\w+)' parameter", str(exc))
    name = found.group(1) if found else None
    where = f"'{name}' (from {_origin(model, name, overrides)})" if name else "value"
    return HyperparameterError(
        f"hyper-parameter {where} rejected by {model.training.estimator}: {exc} "
        "Fix the override of the retrain run or training.hyperparameters in the model config."
    )


def build_pipeline(model: ModelConfig, overrides: str | Mapping[str, Any] | None = None) -> Pipeline:
    """Features -> estimator, from the config alone (the model takes the raw logged feature columns)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f.name for f in model.features if f.type in ("int", "float")]
    parts: list[tuple[str, Any, list[str]]] = []
    if numeric:
        # Median imputation keeps nullable numerics usable by any estimator, not only NaN-aware trees.
        parts.append(
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric)
        )
    for spec in model.features:
        if spec.type == "category":
            # Declared categories fix the encoding; a missing value is its own indicator, an unknown one all zeros.
            cats = list(spec.categories or ()) + ([None] if spec.nullable else [])
            parts.append((spec.name, OneHotEncoder(categories=[cats], handle_unknown="ignore"), [spec.name]))
        elif spec.type == "bool":
            cats = [False, True, None] if spec.nullable else [False, True]
            encoder = OneHotEncoder(
                categories=[cats], handle_unknown="ignore", drop=None if spec.nullable else "if_binary"
            )
            parts.append((spec.name, encoder, [spec.name]))
    features = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("features", features), ("estimator", build_estimator(model, overrides))])


# --- prepare ----------------------------------------------------------------------------------------------


def holdout_mask(request_ids: pd.Series, fraction: float) -> np.ndarray:
    """True for the holdout rows: a fixed hash of the request id, so a row is on the same side in every retrain."""
    import pandas as pd

    buckets = pd.util.hash_pandas_object(request_ids.astype(str), index=False).to_numpy() % 1_000_000
    return buckets < round(fraction * 1_000_000)


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (column names, dtypes and every value, in order)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    if len(frame):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _partition_columns(uri: str) -> list[str]:
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(uri)
    with fs.open(path, "rb") as fh:
        return list(pq.read_schema(fh).names)


def load_window(model: ModelConfig, window: Window, lake_root: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The window's labelled rows, validated: every failure names the window or the partition and what to do."""
    frame, partitions = lake.read_partitions(model.name, "labelled", window.start, window.end, root=lake_root)
    pattern = lake.labelled_path(model.name, "YYYY-MM-DD", lake_root)
    if not partitions:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': no labelled partitions ({pattern} for "
            f"{window.start} <= dt < {window.end}); run ingest_feedback for those days or choose a window with data"
        )
    needed = [REQUEST_ID, LABEL, *model.feature_names]
    for uri in partitions:
        missing = [c for c in needed if c not in _partition_columns(uri)]
        if missing:
            raise TrainingDataError(
                f"partition {uri} (training window {window}): column(s) {', '.join(missing)} missing; the model "
                f"expects {', '.join(needed)}. Re-run ingest_feedback for that day, or exclude it from the window."
            )
    rows = len(frame)
    if rows < model.training.min_rows:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': {rows} labelled rows in {len(partitions)} "
            f"partition(s), fewer than training.min_rows={model.training.min_rows}; widen the window or lower "
            f"training.min_rows in {model.source or 'the model config'}"
        )
    labels = frame[LABEL]
    bad = labels[~labels.isin(model.label.classes)]
    if len(bad):
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': {len(bad)} label value(s) outside the declared "
            f"classes {list(model.label.classes)} (e.g. {bad.iloc[0]!r}); fix the outcome data or label.classes"
        )
    present = sorted(labels.unique().tolist())
    if len(present) < 2:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': label '{model.label.name}' has a single class "
            f"({present[0]}) in all {rows} rows; a classifier needs both classes, widen the window"
        )
    return frame, partitions


def prepare(
    model: ModelConfig,
    window: Window,
    *,
    lake_root: str | None = None,
    hyperparameters: str | Mapping[str, Any] | None = None,
) -> Prepared:
    # Rejected hyper-parameters fail here, before the window is read, not after minutes of fitting.
    build_estimator(model, hyperparameters)
    frame, partitions = load_window(model, window, lake_root)
    content = frame[[REQUEST_ID, LABEL, *model.feature_names]]
    mask = holdout_mask(frame[REQUEST_ID], model.training.holdout_fraction)
    train_frame = content.loc[~mask, [*model.feature_names, LABEL]].reset_index(drop=True)
    holdout = frame.loc[mask].reset_index(drop=True)
    for name, part in (("training", train_frame), ("holdout", holdout)):
        if part[LABEL].nunique() < 2:
            raise TrainingDataError(
                f"training window {window} of model '{model.name}': the {name} split ({len(part)} rows) has a "
                "single class; widen the window or raise training.min_rows"
            )
    prepared = Prepared(
        window=window,
        train=train_frame,
        holdout=holdout,
        fingerprint=fingerprint(content),
        partitions=partitions,
        hyperparameters=resolve_hyperparameters(model, hyperparameters),
    )
    log.info(
        "prepared %s window %s: %s rows from %s partitions (%s train, %s holdout), fingerprint %s",
        model.name, window, len(frame), len(partitions), len(train_frame), len(holdout), prepared.fingerprint[:12],
    )
    return prepared


# --- train ------------------------------------------------------------------------------------------------


def train(
    model: ModelConfig, train_frame: pd.DataFrame, hyperparameters: str | Mapping[str, Any] | None = None
) -> Pipeline:
    pipeline = build_pipeline(model, hyperparameters)
    X, y = train_frame[model.feature_names], train_frame[LABEL].to_numpy()
    try:
        pipeline.fit(X, y)
    except (ValueError, TypeError) as exc:
        if "parameter" in str(exc):  # a constraint scikit-learn only checks inside fit
            raise _hyperparameter_error(model, exc, parse_hyperparameters(hyperparameters)) from None
        raise
    return pipeline


def model_bytes(pipeline: Pipeline) -> tuple[bytes, list[str]]:
    """The skops bytes of a fitted pipeline and the minimal list of non-default types it needs trusted."""
    import skops.io as sio

    data = sio.dumps(pipeline)
    needed = sorted(sio.get_untrusted_types(data=data))
    refused = sorted(set(needed) - TRUSTED_TYPES)
    if refused:
        raise UntrustedModelError(
            f"the fitted model contains types Evergreen does not trust: {', '.join(refused)}; review them and add "
            "them to evergreen.training.TRUSTED_TYPES, or choose another estimator"
        )
    return data, needed


def save_model_file(pipeline: Pipeline, path: str | os.PathLike[str]) -> list[str]:
    """Write the pipeline as a skops file; returns the trusted types it needs."""
    data, needed = model_bytes(pipeline)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return needed


def model_file_types(path: str | os.PathLike[str]) -> list[str]:
    """The non-default types a skops file needs trusted, checked against :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    try:
        needed = sorted(sio.get_untrusted_types(file=str(path)))
    except Exception as exc:  # a pickle or a corrupt file: skops cannot even list its types
        raise UntrustedModelError(
            f"{path}: not a skops model file ({exc}); Evergreen loads only skops models"
        ) from None
    refused = sorted(set(needed) - TRUSTED_TYPES)
    if refused:
        raise UntrustedModelError(
            f"{path}: the model contains types Evergreen does not trust: {', '.join(refused)}; refusing to load it"
        )
    return needed


def load_model_file(path: str | os.PathLike[str]) -> Pipeline:
    """Load a skops file, trusting only :data:`TRUSTED_TYPES` (never what the file itself asks for)."""
    import skops.io as sio

    return sio.load(str(path), trusted=model_file_types(path))


# --- evaluate ---------------------------------------------------------------------------------------------


def _positive_scores(model: ModelConfig, pipeline: Pipeline, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(score of the positive class, predicted class) -- the positive class is the last declared one."""
    import numpy as np

    classes = list(pipeline.classes_)
    positive = model.label.classes[-1]
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
    positive = model.label.classes[-1]
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
            scorable = rows >= MIN_SLICE_ROWS and (model.metric not in _METRICS_NEED_SCORES or 0 < positives < rows)
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


# --- register ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _fluent_mlflow(target: MlflowTarget) -> Iterator[None]:
    """Point MLflow's fluent API (needed by log_model) at ``target`` and restore the previous setting after.

    The direct, in-process path must not leave the caller's process pointed at another store. MLflow has no
    public way to read back "not set", hence its module globals.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(target.tracking_uri)
    mlflow.set_registry_uri(target.registry_uri or target.tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def training_experiment(model: str) -> str:
    return f"evergreen/{model}/training"


def _experiment_id(client: MlflowClient, name: str, artifact_location: str) -> str:
    """Get-or-create, like ``MlflowHook.experiment_id`` (components run without Airflow)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location or None)
    except MlflowException as exc:  # another run created it in between
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def find_registered_version(
    client: MlflowClient,
    model: str,
    *,
    airflow_run_id: str | None = None,
    kfp_run_id: str | None = None,
    airflow_dag_id: str | None = None,
    fingerprint: str | None = None,
) -> ModelVersion | None:
    """The newest version of ``model`` registered by the given Airflow run and/or Kubeflow run, or None.

    This is how a caller that only knows its run ids (the operator in remote mode) finds the version a finished
    pipeline registered; ``airflow_dag_id`` and ``fingerprint`` narrow the match further.
    """
    terms = [f"name='{_quote(model)}'"]
    wanted = {"airflow_run_id": airflow_run_id, "kfp_run_id": kfp_run_id, "airflow_dag_id": airflow_dag_id,
              "data_fingerprint": fingerprint}
    for key, value in wanted.items():
        if value:
            terms.append(f"tags.`{TAG}{key}`='{_quote(value)}'")
    if not (airflow_run_id or kfp_run_id):
        raise ValueError("find_registered_version needs an airflow_run_id or a kfp_run_id")
    versions = client.search_model_versions(" and ".join(terms))
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _tags(model: ModelConfig, lineage: Lineage, evaluation: Evaluation) -> dict[str, str]:
    m = evaluation.metric
    return {
        f"{TAG}status": STATUS_CANDIDATE,
        f"{TAG}airflow_dag_id": lineage.airflow_dag_id,
        f"{TAG}airflow_run_id": lineage.airflow_run_id,
        f"{TAG}kfp_run_id": lineage.kfp_run_id,
        f"{TAG}training_window": lineage.window.tag,
        f"{TAG}data_fingerprint": lineage.fingerprint,
        f"{TAG}holdout_uri": lineage.holdout_uri,
        f"{TAG}metric.{m}": repr(evaluation.value),
        f"{TAG}metric.{m}_ci_low": repr(evaluation.ci_low),
        f"{TAG}metric.{m}_ci_high": repr(evaluation.ci_high),
        f"{TAG}holdout_rows": str(evaluation.rows),
        f"{TAG}training_rows": str(lineage.training_rows),
        f"{TAG}estimator": model.training.estimator,
        f"{TAG}hyperparameters": json.dumps(lineage.hyperparameters, sort_keys=True),
    }


def _metric_key(*parts: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces only.
    return ".".join(re.sub(r"[^A-Za-z0-9_\-/ ]", "_", p) for p in parts)


class _PickleSwitchFilter(logging.Filter):
    """Drop MLflow's warning that it could not re-load the model to check the input example *because* the
    platform's pickle switch is off -- expected, and evaluate already scored this very model. Any other
    validation failure still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (text.startswith("Failed to validate serving input") and "PICKLE_DESERIALIZATION" in text)


@contextlib.contextmanager
def _quiet_expected_validation() -> Iterator[None]:
    logger = logging.getLogger("mlflow.models.model")
    flt = _PickleSwitchFilter()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def _requirements() -> list[str]:
    # Pinned from the running environment: inferring them makes MLflow load the model in a subprocess.
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "skops", "pandas", "numpy")]


def register(
    model: ModelConfig,
    pipeline: Pipeline,
    evaluation: Evaluation,
    lineage: Lineage,
    target: MlflowTarget,
    example: pd.DataFrame,
    trusted: list[str] | None = None,
) -> Registered:
    """Log the model to MLflow and create a candidate version of the registered model ``model.name``.

    Idempotent per Airflow run: a retry of the same run on the same data returns the version it already made.
    ``trusted`` is the model's skops type list when already known (the pipeline read it from the model file);
    MLflow re-loads the saved model with exactly this list, so a wrong one fails the registration.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    if not evaluation.passed:
        raise TrainingError(
            f"model '{model.name}' window {lineage.window}: holdout {evaluation.metric}={evaluation.value:.4f} "
            f"missed training.sanity_floor={evaluation.sanity_floor}; nothing to register"
        )
    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.registry_uri or target.tracking_uri)
    if lineage.airflow_run_id:
        existing = find_registered_version(
            client, model.name, airflow_run_id=lineage.airflow_run_id, airflow_dag_id=lineage.airflow_dag_id,
            fingerprint=lineage.fingerprint,
        )
        if existing is not None:
            log.info("version %s of %s already registered by Airflow run %s", existing.version, model.name,
                     lineage.airflow_run_id)
            return Registered(model.name, str(existing.version), existing.run_id or "",
                              f"models:/{model.name}/{existing.version}", reused=True)
    if trusted is None:
        _, trusted = model_bytes(pipeline)
    elif set(trusted) - TRUSTED_TYPES:
        raise UntrustedModelError(f"types {sorted(set(trusted) - TRUSTED_TYPES)} are not trusted by Evergreen")
    X = example[model.feature_names].copy()
    for spec in model.features:
        if spec.type == "int" and spec.nullable:  # a nullable int arrives as float with NaN: declare it double
            X[spec.name] = X[spec.name].astype("float64")
    with warnings.catch_warnings():
        # The integer-columns hint: the remaining int features are non-nullable by contract.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(X, pipeline.predict(X))
    tags = _tags(model, lineage, evaluation)
    m = evaluation.metric
    with _fluent_mlflow(target):
        experiment_id = _experiment_id(client, training_experiment(model.name), target.artifact_location)
        run_name = f"{model.name}-{lineage.window.start:%Y%m%d}-{lineage.window.end:%Y%m%d}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            mlflow.log_params({
                "window_start": lineage.window.start.isoformat(),
                "window_end": lineage.window.end.isoformat(),
                "estimator": model.training.estimator,
                **{f"hp.{k}": v for k, v in lineage.hyperparameters.items()},
            })
            mlflow.log_metrics({
                f"holdout_{m}": evaluation.value,
                f"holdout_{m}_ci_low": evaluation.ci_low,
                f"holdout_{m}_ci_high": evaluation.ci_high,
                "holdout_rows": evaluation.rows,
                "training_rows": lineage.training_rows,
                **{_metric_key(f"holdout_{m}", s.feature, s.value): s.metric for s in evaluation.slices
                   if s.metric is not None},
            })
            mlflow.log_dict(json.loads(evaluation.to_json()), "evaluation.json")
            with _quiet_expected_validation():
                info = mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    signature=signature,
                    input_example=X.head(5),
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    skops_trusted_types=trusted,
                    pip_requirements=_requirements(),
                )
        try:
            client.create_registered_model(model.name, description=model.description or None)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            model.name, source=info.model_uri, run_id=run.info.run_id, tags=tags, model_id=info.model_id
        )
    log.info("registered %s version %s (run %s) as a candidate", model.name, version.version, run.info.run_id)
    return Registered(model.name, str(version.version), run.info.run_id, f"models:/{model.name}/{version.version}")


def load_model(model_uri: str, target: MlflowTarget) -> Pipeline:
    """Load a registered sklearn model (``models:/churn/3``) without pickle, whatever the pickle switch says.

    Only skops artifacts are accepted, and only with :data:`TRUSTED_TYPES` -- the trust list inside the
    artifact's MLmodel file is ignored, which is what makes this safe where MLflow's own loader is not.
    """
    import mlflow.artifacts
    import yaml

    with tempfile.TemporaryDirectory(prefix="evergreen-model-") as tmp, _fluent_mlflow(target):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        flavor = (yaml.safe_load((local / "MLmodel").read_text()).get("flavors") or {}).get("sklearn") or {}
        fmt = flavor.get("serialization_format", "pickle")
        if fmt != "skops":
            raise UntrustedModelError(
                f"{model_uri}: saved with serialization format '{fmt}'; Evergreen loads only skops models. "
                "Re-register it through the training pipeline."
            )
        return load_model_file(local / flavor["pickled_model"])


# --- the whole training in one process ----------------------------------------------------------------------


def write_holdout(holdout: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(path, index=False)
    return str(path)


def run_training(
    model: ModelConfig,
    window: Window,
    target: MlflowTarget,
    *,
    holdout_path: str | os.PathLike[str],
    lake_root: str | None = None,
    hyperparameters: str | Mapping[str, Any] | None = None,
    airflow_dag_id: str = "",
    airflow_run_id: str = "",
    kfp_run_id: str = "",
) -> TrainingResult:
    """prepare -> train -> evaluate -> register (when the sanity floor passes), in this process."""
    prepared = prepare(model, window, lake_root=lake_root, hyperparameters=hyperparameters)
    holdout_uri = write_holdout(prepared.holdout, holdout_path)
    pipeline = train(model, prepared.train, hyperparameters)
    evaluation = evaluate(model, pipeline, prepared.holdout)
    registered = None
    if evaluation.passed:
        lineage = Lineage(
            window=window, fingerprint=prepared.fingerprint, holdout_uri=holdout_uri,
            training_rows=len(prepared.train), hyperparameters=prepared.hyperparameters,
            airflow_dag_id=airflow_dag_id, airflow_run_id=airflow_run_id, kfp_run_id=kfp_run_id,
        )
        registered = register(model, pipeline, evaluation, lineage, target, prepared.holdout.head(1000))
    return TrainingResult(prepared, evaluation, registered)


# --- pipeline steps: strings and artifact paths in, small values out ---------------------------------------------


def _model_config(model: str, config_dir: str) -> ModelConfig:
    try:
        return load_config(config_dir or None).model(model)
    except ConfigError as exc:
        raise TrainingError(f"model '{model}': {exc}") from None


def prepare_step(
    *, model: str, window_start: str, window_end: str, hyperparameters: str, lake_root: str, config_dir: str,
    train_path: str, holdout_path: str, train_metadata: dict, holdout_metadata: dict,
) -> tuple[str, int]:
    cfg = _model_config(model, config_dir)
    window = Window.parse(window_start, window_end)
    prepared = prepare(cfg, window, lake_root=lake_root or None, hyperparameters=hyperparameters)
    prepared.train.to_parquet(train_path, index=False)
    write_holdout(prepared.holdout, holdout_path)
    common = {"model": model, "training_window": window.tag, "data_fingerprint": prepared.fingerprint}
    train_metadata.update({**common, "rows": len(prepared.train), "partitions": prepared.partitions})
    holdout_metadata.update({**common, "rows": len(prepared.holdout)})
    return prepared.fingerprint, len(prepared.train) + len(prepared.holdout)


def train_step(
    *, model: str, hyperparameters: str, config_dir: str, fingerprint: str, train_path: str, model_path: str,
    model_metadata: dict,
) -> None:
    import pandas as pd

    cfg = _model_config(model, config_dir)
    frame = pd.read_parquet(train_path)
    pipeline = train(cfg, frame, hyperparameters)
    trusted = save_model_file(pipeline, model_path)
    model_metadata.update({
        "training_rows": len(frame),
        "format": "skops", "skops_trusted_types": trusted, "estimator": cfg.training.estimator,
        "hyperparameters": resolve_hyperparameters(cfg, hyperparameters), "data_fingerprint": fingerprint,
    })


def evaluate_step(
    *, model: str, config_dir: str, holdout_path: str, model_path: str,
    log_metric: Callable[[str, float], None] | None = None,
) -> tuple[str, str]:
    import pandas as pd

    cfg = _model_config(model, config_dir)
    evaluation = evaluate(cfg, load_model_file(model_path), pd.read_parquet(holdout_path))
    if log_metric is not None:  # shown on the Kubeflow run page
        for key, value in ((f"holdout_{evaluation.metric}", evaluation.value),
                           (f"holdout_{evaluation.metric}_ci_low", evaluation.ci_low),
                           (f"holdout_{evaluation.metric}_ci_high", evaluation.ci_high)):
            if math.isfinite(value):
                log_metric(key, value)
    return ("register" if evaluation.passed else "below_floor"), evaluation.to_json()


def register_step(
    *, model: str, window_start: str, window_end: str, hyperparameters: str, config_dir: str,
    mlflow_tracking_uri: str, mlflow_registry_uri: str, mlflow_artifact_location: str, fingerprint: str,
    evaluation: str, airflow_dag_id: str, airflow_run_id: str, kfp_run_id: str, holdout_uri: str,
    holdout_path: str, model_path: str, training_rows: int = 0,
) -> str:
    import pyarrow.parquet as pq

    cfg = _model_config(model, config_dir)
    evaluated = Evaluation.from_json(evaluation)
    example = next(pq.ParquetFile(holdout_path).iter_batches(batch_size=1000)).to_pandas()
    lineage = Lineage(
        window=Window.parse(window_start, window_end), fingerprint=fingerprint, holdout_uri=holdout_uri,
        training_rows=training_rows, hyperparameters=resolve_hyperparameters(cfg, hyperparameters),
        airflow_dag_id=airflow_dag_id, airflow_run_id=airflow_run_id, kfp_run_id=kfp_run_id,
    )
    target = MlflowTarget(mlflow_tracking_uri, mlflow_registry_uri, mlflow_artifact_location)
    return register(
        cfg, load_model_file(model_path), evaluated, lineage, target, example, trusted=model_file_types(model_path)
    ).version


def below_floor_step(*, model: str, evaluation: str) -> str:
    evaluated = Evaluation.from_json(evaluation)
    log.warning(
        "%s: holdout %s=%.4f missed the sanity floor %s; no version registered",
        model, evaluated.metric, evaluated.value, evaluated.sanity_floor,
    )
    return ""


# --- the pipeline definition, importable without putting include/ on sys.path -----------------------------------

PIPELINE_FILE = REPO_ROOT / "include" / "pipelines" / "training.py"


def pipeline_module() -> Any:
    """``include/pipelines/training.py`` as a module (it imports kfp: call this inside a task, not at parse time)."""
    import importlib.util
    import sys

    name = "evergreen_training_pipeline"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PIPELINE_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile_training_pipeline(path: str | os.PathLike[str]) -> str:
    """Compile the training pipeline to KFP IR YAML at ``path``."""
    return pipeline_module().compile_pipeline(path)
