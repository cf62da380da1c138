"""A fitted pipeline's ``predict_proba`` for the serving path: the same numbers, without the per-call overhead.

A scikit-learn call on a micro-batch costs almost nothing in arithmetic and a lot in machinery: the pipeline
validates the frame at each step, the ``ColumnTransformer`` dispatches its parts through joblib, and a random forest
runs each of its trees through joblib's ``Parallel`` with a configuration context and a warnings filter per tree
(measured on the demo's 100-tree forest, 8 rows: 13 ms for ``pipeline.predict_proba``, 8.5 ms of it in the forest).
:func:`compile_pipeline` builds a :class:`Predictor` that computes exactly what ``pipeline.predict_proba`` computes,
bit for bit, from the parsed feature columns:

* the features step, when it is the ``ColumnTransformer`` :func:`evergreen.train.spec.build_pipeline` builds: the
  numeric part (``SimpleImputer`` then ``StandardScaler``) by their own fitted numbers and in their own order of
  operations (fill the missing values with ``statistics_``, subtract ``mean_``, divide by ``scale_``, in float64);
  each one-hot part by a table the fitted encoder itself produced at load time, one row per value the contract lets
  through (the declared categories, False/True, and None when nullable); stacked in the transformer's order;
* the estimator, when it is a forest (``RandomForestClassifier``, ``ExtraTreesClassifier``: scikit-learn's
  ``ForestClassifier.predict_proba``, one job): each tree's leaf values summed in ``estimators_`` order into a
  float64 zero array and divided by the number of trees -- what scikit-learn's ``_accumulate_prediction`` does with
  one job, minus the joblib dispatch;
* any other step: the fitted step's own method (the transformers' ``transform``, the estimator's ``predict_proba``).

A pipeline of another shape is served by ``pipeline.predict_proba`` unchanged. The order of operations above is
scikit-learn 1.9's (``requirements.in`` pins it); should an upgrade change it, the check below says so. Every
compiled predictor is checked at load time against ``pipeline.predict_proba`` on probe rows drawn from the feature
specs (every category, nulls, the range bounds) and is used only when the two agree exactly. A batch whose
transformed features are not finite in float32 (a value scikit-learn's own check refuses, or treats as missing) is
handed to ``pipeline.predict_proba``, so that the answer, or the error, is scikit-learn's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import FeatureSpec, ModelConfig

log = logging.getLogger(__name__)

Columns = Mapping[str, Any]  # feature name -> parsed values (float64 for numbers, object for bools and categories)

PROBE_ROWS = 256


def frame(model: ModelConfig, columns: Columns) -> pd.DataFrame:
    """The parsed columns as the frame ``pipeline.predict_proba`` takes (the config's feature order)."""
    import pandas as pd

    return pd.DataFrame({name: columns[name] for name in model.feature_names})


class Predictor:
    """``predict_proba`` over parsed feature columns; this base class is the pipeline itself, on a frame."""

    compiled = False

    def __init__(self, model: ModelConfig, pipeline: Any) -> None:
        self.model = model
        self.pipeline = pipeline
        self.classes_ = pipeline.classes_

    def predict_proba(self, columns: Columns) -> np.ndarray:
        return self.pipeline.predict_proba(frame(self.model, columns))


class CompiledPipeline(Predictor):
    """The features step and the estimator of a two-step pipeline, each compiled or called as fitted."""

    compiled = True

    def __init__(self, model: ModelConfig, pipeline: Any, transform: Callable[[Columns], np.ndarray],
                 estimate: Callable[[np.ndarray], np.ndarray | None]) -> None:
        super().__init__(model, pipeline)
        self._transform = transform
        self._estimate = estimate

    def predict_proba(self, columns: Columns) -> np.ndarray:
        try:
            proba = self._estimate(self._transform(columns))
        except KeyError:  # a value outside an encoder's table (the contract lets none through): the pipeline decides
            proba = None
        if proba is None:  # or not finite in float32: scikit-learn's own check decides (an error, or missing values)
            return self.pipeline.predict_proba(frame(self.model, columns))
        return proba


# --- the features step -----------------------------------------------------------------------------------------


def _numeric_part(columns: Sequence[str], steps: Any) -> Callable[[Columns], np.ndarray] | None:
    """``SimpleImputer`` then ``StandardScaler`` over float64 columns, or None for another sub-pipeline."""
    import numpy as np
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if type(steps) is not Pipeline or len(steps.steps) != 2:
        return None
    imputer, scaler = steps.steps[0][1], steps.steps[1][1]
    if type(imputer) is not SimpleImputer or type(scaler) is not StandardScaler:
        return None
    missing = imputer.missing_values
    statistics = np.asarray(imputer.statistics_)
    if (imputer.add_indicator or not (isinstance(missing, float) and math.isnan(missing))
            or statistics.dtype != np.float64 or statistics.shape != (len(columns),)
            or not np.isfinite(statistics).all()):  # a NaN statistic drops its column: not compiled
        return None
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None
    for value in (mean, scale):
        if value is not None and (value.dtype != np.float64 or value.shape != (len(columns),)):
            return None
    names = list(columns)

    def transform(cols: Columns) -> np.ndarray:
        X = np.column_stack([np.asarray(cols[name], dtype=np.float64) for name in names])
        missing_at = np.isnan(X)
        if missing_at.any():
            X[missing_at] = np.broadcast_to(statistics, X.shape)[missing_at]
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
        return X

    return transform


def _domain(spec: FeatureSpec) -> list[Any] | None:
    """Every parsed value of the feature the contract lets through (None for a number)."""
    if spec.type == "category":
        values: list[Any] = list(spec.categories or ())
    elif spec.type == "bool":
        values = [False, True]
    else:
        return None
    return values + ([None] if spec.nullable else [])


def _table_part(model: ModelConfig, name: str, encoder: Any) -> Callable[[Columns], np.ndarray] | None:
    """A one-column transformer of a category or bool feature as a lookup table of its own outputs."""
    import numpy as np
    import pandas as pd
    from scipy import sparse

    spec = next((f for f in model.features if f.name == name), None)
    domain = None if spec is None else _domain(spec)
    if domain is None:
        return None
    table = encoder.transform(pd.DataFrame({name: np.array(domain, dtype=object)}))
    table = table.toarray() if sparse.issparse(table) else np.asarray(table)
    if table.ndim != 2 or table.shape[0] != len(domain):
        return None
    index = {value: i for i, value in enumerate(domain)}  # bools and None, or strings and None: no key collides

    def transform(cols: Columns) -> np.ndarray:
        # a value outside the table (never after the contract's check) raises KeyError: the caller falls back
        return table[[index[v] for v in cols[name]]]

    return transform


def _features_step(model: ModelConfig, step: Any) -> Callable[[Columns], np.ndarray] | None:
    """The ``ColumnTransformer`` of :func:`evergreen.train.spec.build_pipeline`, compiled, or None."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    if type(step) is not ColumnTransformer or step.sparse_output_ or step.transformer_weights:
        return None
    if list(getattr(step, "feature_names_in_", ())) != list(model.feature_names):
        return None
    if getattr(step, "_sklearn_output_config", {}).get("transform", "default") != "default":
        return None
    parts = []
    for name, trans, columns in step.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        if (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)
                or not set(columns) <= set(model.feature_names)):
            return None
        if not len(columns):
            continue
        kinds = {model.feature(c).type for c in columns}
        if type(trans) is OneHotEncoder and len(columns) == 1 and kinds <= {"category", "bool"}:
            part = _table_part(model, columns[0], trans)
        elif kinds <= {"int", "float"}:
            part = _numeric_part(columns, trans)
        else:
            part = None
        if part is None:
            return None
        parts.append(part)
    if not parts:
        return None

    def transform(cols: Columns) -> np.ndarray:
        return np.hstack([part(cols) for part in parts])  # the transformer's own stacking of dense outputs

    return transform


# --- the estimator ---------------------------------------------------------------------------------------------


def _forest(estimator: Any) -> Callable[[np.ndarray], np.ndarray | None] | None:
    """A one-job forest classifier's ``predict_proba`` without joblib, or None for another estimator."""
    import numpy as np
    from sklearn.ensemble._forest import ForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    if (not isinstance(estimator, ForestClassifier) or type(estimator).predict_proba is not
            ForestClassifier.predict_proba or estimator.n_jobs not in (None, 1) or estimator.n_outputs_ != 1):
        return None
    # More jobs sum the trees in whatever order the threads finish (not reproducible); one job sums them in order.
    n_classes = int(estimator.n_classes_)
    trees = []
    for tree in estimator.estimators_:
        if (not isinstance(tree, DecisionTreeClassifier) or type(tree).predict_proba is not
                DecisionTreeClassifier.predict_proba or tree.n_outputs_ != 1 or int(tree.n_classes_) != n_classes):
            return None
        # DecisionTreeClassifier.predict_proba: tree_.predict(X)[:, :n_classes], i.e. the leaves' value rows
        trees.append((tree.tree_, tree.tree_.value[:, 0, :n_classes]))
    n_features = estimator.n_features_in_
    count = len(trees)

    def estimate(X: np.ndarray) -> np.ndarray | None:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, and scikit-learn's check says so
            X32 = np.ascontiguousarray(X, dtype=np.float32)  # the forest's own conversion (validate_data, float32)
        if X32.ndim != 2 or X32.shape[1] != n_features:
            raise ValueError(f"X has {X32.shape[-1]} features, but the forest is expecting {n_features} features")
        if not np.isfinite(X32).all():
            return None
        proba = np.zeros((X32.shape[0], n_classes), dtype=np.float64)
        for tree, value in trees:
            proba += value[tree.apply(X32)]
        proba /= count
        return proba

    return estimate


# --- building and checking -------------------------------------------------------------------------------------


def probe_columns(model: ModelConfig, n: int = PROBE_ROWS, seed: int = 0) -> dict[str, Any]:
    """Parsed columns of ``n`` rows the contract accepts: every category and bool, nulls where allowed, values at
    and inside the range bounds (random, seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for spec in model.features:
        domain = _domain(spec)
        if domain is not None:
            picks = [domain[i % len(domain)] for i in range(n)]
            rng.shuffle(picks)
            columns[spec.name] = np.array(picks, dtype=object)
            continue
        low = spec.min if spec.min is not None else (0.0 if spec.max is None else min(0.0, spec.max))
        high = spec.max if spec.max is not None else low + 10_000.0
        values = rng.uniform(low, high, n)
        if spec.type == "int":
            values = np.clip(np.round(values), math.ceil(low), math.floor(high))
        values[:2] = (math.ceil(low), math.floor(high)) if spec.type == "int" else (low, high)
        if spec.nullable:
            values[rng.random(n) < 0.2] = np.nan
        columns[spec.name] = values.astype(np.float64)
    return columns


def compile_pipeline(model: ModelConfig, pipeline: Any) -> Predictor:
    """The fastest :class:`Predictor` that answers exactly what ``pipeline.predict_proba`` answers; the pipeline
    itself when no part compiles, when compiling fails, or when the compiled predictor disagrees on the probe."""
    import numpy as np
    from sklearn.pipeline import Pipeline

    plain = Predictor(model, pipeline)
    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2 or not hasattr(pipeline, "predict_proba"):
        return plain
    features, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    try:
        transform = _features_step(model, features)
        estimate = _forest(estimator)
        if transform is None and estimate is None:
            return plain
        if transform is None:
            def transform(cols: Columns) -> np.ndarray:
                return features.transform(frame(model, cols))
        if estimate is None:
            estimate = estimator.predict_proba
        compiled = CompiledPipeline(model, pipeline, transform, estimate)
        probe = probe_columns(model)
        expected = pipeline.predict_proba(frame(model, probe))
        got = compiled.predict_proba(probe)
        same = got.dtype == expected.dtype and np.array_equal(got, expected)
    except Exception:  # whatever fails here, the pipeline's own path serves (and the warm-up judges the version)
        log.exception("model '%s': compiling the pipeline failed; serving with predict_proba", model.name)
        return plain
    if not same:
        log.warning("model '%s': the compiled pipeline does not reproduce predict_proba exactly on the probe rows; "
                    "serving with predict_proba", model.name)
        return plain
    return compiled
