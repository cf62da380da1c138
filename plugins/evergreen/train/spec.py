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

from evergreen.config import EXAMPLE_ESTIMATOR, SKLEARN, ModelConfig, estimator_problem, hyperparameter_problem

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
    """The estimator class of the config: only a scikit-learn path or one the platform lists is imported at all
    (the rule is :func:`evergreen.config.estimator_problem`), and it must then be a classifier."""
    path = model.training.estimator
    where = f"model '{model.name}': training.estimator"
    source = f" ({model.source})" if model.source else ""
    problem = estimator_problem(path, model.platform_estimators)
    if problem:
        raise TrainingError(f"{where}: {problem}{source}")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise TrainingError(
            f"{where} '{path}' cannot be imported; use a dotted path to a scikit-learn classifier such as "
            f"{EXAMPLE_ESTIMATOR}{source}"
        ) from None
    listed = path in model.platform_estimators
    not_classifier = TrainingError(
        f"{where} '{path}' is not a classifier; this platform trains binary classifiers: use one such as "
        f"{EXAMPLE_ESTIMATOR}{' or another class listed in platform.allowed_estimators' if listed else ''}{source}"
    )
    from sklearn.base import BaseEstimator, is_classifier

    if not isinstance(cls, type):  # a function such as sklearn.utils.shuffle
        raise not_classifier
    if not listed and not (issubclass(cls, BaseEstimator) and cls.__module__.split(".", 1)[0] == SKLEARN):
        raise not_classifier  # e.g. a foreign class re-exported by a scikit-learn module
    try:
        instance = cls()  # scikit-learn's contract: __init__ only stores its arguments
    except TypeError:
        raise TrainingError(
            f"{where} '{path}' cannot be built without arguments (a meta-estimator needs an estimator object, "
            f"which a config cannot hold); use a plain classifier such as {EXAMPLE_ESTIMATOR}{source}"
        ) from None
    try:
        classifier = is_classifier(instance)
    except (AttributeError, TypeError, ValueError):  # no scikit-learn tags: not a scikit-learn-style estimator
        classifier = False
    if not classifier:
        raise not_classifier
    return cls


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
    for name, value in params.items():
        problem = hyperparameter_problem(name, value)
        if problem:
            raise HyperparameterError(f"hyper-parameter {name!r} (from {_origin(model, name, extra)}): {problem}")
        if name not in accepted:
            raise HyperparameterError(
                f"hyper-parameter '{name}' (from {_origin(model, name, extra)}) is not accepted by "
                f"{model.training.estimator}; accepted: {', '.join(sorted(accepted))}"
            )
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = model.training.seed  # the same data and config give the same model
    estimator = cls(**params)
    # scikit-learn's own constraint check, as fit runs it; a listed non-scikit-learn class checks its values in fit
    validate = getattr(estimator, "_validate_params", None)
    if validate is not None and hasattr(estimator, "_parameter_constraints"):
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


def check_hyperparameters(model: ModelConfig, overrides: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's hyper-parameter overrides, parsed and checked against the estimator exactly as training will build it
    (names it knows, JSON scalar values, its own constraint check): the retrain DAG's ``decide`` runs this, so a bad
    value fails there, naming the parameter, before any pipeline starts."""
    extra = parse_hyperparameters(overrides)
    build_estimator(model, extra)
    return extra


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
