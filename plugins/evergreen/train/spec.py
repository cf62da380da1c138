"""What a model is, from its config alone: the estimator with its hyper-parameters, the feature pipeline, the fit.

The config names the estimator and its hyper-parameters; a run may override them. Every name and value is checked
here, against the estimator itself, before any data is read: a bad retrain request fails in seconds with the
parameter named and where it came from. The base error of training lives here because every other module of the
stage builds on this one.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evergreen.config import ModelConfig

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

LABEL = "label"  # the label column of the lake's labelled partitions (shared lake layout)
METRICS_NEED_SCORES = frozenset({"roc_auc", "log_loss"})


class TrainingError(ValueError):
    """Training cannot proceed; the message names the window, partition or parameter and what to do."""


class HyperparameterError(TrainingError):
    """A hyper-parameter is unknown to the estimator or has a value it rejects."""


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
    if model.metric in METRICS_NEED_SCORES and not hasattr(estimator, "predict_proba"):
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


def train(
    model: ModelConfig, train_frame: pd.DataFrame, hyperparameters: str | Mapping[str, Any] | None = None
) -> Pipeline:
    """Fit the configured pipeline on the training split (features + label)."""
    pipeline = build_pipeline(model, hyperparameters)
    X, y = train_frame[model.feature_names], train_frame[LABEL].to_numpy()
    try:
        pipeline.fit(X, y)
    except (ValueError, TypeError) as exc:
        if "parameter" in str(exc):  # a constraint scikit-learn only checks inside fit
            raise _hyperparameter_error(model, exc, parse_hyperparameters(hyperparameters)) from None
        raise
    return pipeline
