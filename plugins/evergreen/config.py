"""Typed model and platform configuration, loaded from ``include/config/*.yaml``.

Each YAML file holds a ``models:`` mapping (name -> model block) and optionally one ``platform:`` block.
Adding a model is adding a block: every DAG is generated per model from these objects. Loading validates
everything and fails with a :class:`ConfigError` that names the file, the field and what is allowed.

This module is imported by DAG files at parse time, so it imports nothing heavy (only PyYAML).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from evergreen.experiment.policy import AbTestPolicy  # the three policies: standard library only, safe at parse time
from evergreen.paths import config_dir
from evergreen.promote.policy import GatePolicy
from evergreen.serve.policy import ServingPolicy

FeatureType = Literal["float", "int", "category", "bool"]
Task = Literal["binary_classification"]
Metric = Literal["roc_auc", "accuracy", "log_loss", "f1"]
DriftMethod = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The longest training window, in lake days, that a config or a run may ask for (about ten years): the bound of the
# window_days Param, of retrain.training_window_days and of an explicit window_start/window_end.
MAX_TRAINING_WINDOW_DAYS = 3650
SKLEARN = "sklearn"
EXAMPLE_ESTIMATOR = "sklearn.ensemble.RandomForestClassifier"


class ConfigError(ValueError):
    """A config file is invalid; the message names the file, the field and what is allowed."""


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: FeatureType
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False

    def _check(self, where: str) -> None:
        if self.type == "category" and not self.categories:
            raise ConfigError(f"{where}.categories: required for a 'category' feature; list the allowed values")
        if self.type != "category" and self.categories is not None:
            raise ConfigError(f"{where}.categories: only allowed for type 'category' (this feature is '{self.type}')")
        if self.type in ("category", "bool") and (self.min is not None or self.max is not None):
            raise ConfigError(f"{where}: min/max only apply to 'float' and 'int' features")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigError(f"{where}: min ({self.min}) is greater than max ({self.max})")


@dataclass(frozen=True)
class LabelSpec:
    name: str
    classes: tuple[int, ...] = (0, 1)
    # The class every metric scores as positive (the "1" of ROC AUC, F1 and log loss), in training evaluation and
    # in live monitoring alike. Required unless the classes are the conventional 0/1, where it is 1.
    positive: int | None = None

    @property
    def positive_class(self) -> int:
        """The positive class: :attr:`positive`, or 1 for 0/1 classes. The one rule training and monitoring call."""
        if self.positive is not None:
            if self.positive not in self.classes:
                raise ConfigError(self._not_a_class())
            return self.positive
        if set(self.classes) == {0, 1}:
            return 1
        raise ConfigError(self._positive_required())

    @property
    def negative_classes(self) -> tuple[int, ...]:
        positive = self.positive_class
        return tuple(c for c in self.classes if c != positive)

    def _not_a_class(self) -> str:
        return (f"positive: {self.positive!r} is not one of the label's classes "
                f"[{', '.join(map(str, self.classes))}]; name one of them")

    def _positive_required(self) -> str:
        return (f"positive: required because classes [{', '.join(map(str, self.classes))}] are not 0/1; name the "
                "class the metrics score as positive (e.g. the class that means churned)")

    def _check(self, where: str) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{where}.classes: {list(self.classes)} lists a class twice")
        if self.positive is not None and self.positive not in self.classes:
            raise ConfigError(f"{where}.{self._not_a_class()}")
        if self.positive is None and set(self.classes) != {0, 1}:
            raise ConfigError(f"{where}.{self._positive_required()}")


@dataclass(frozen=True)
class Schedules:
    """Cron expressions (UTC). Each run covers the day before its trigger (a data interval of one day)."""

    ingest_feedback: str = "0 1 * * *"
    monitor_drift: str = "0 2 * * *"
    evaluate_performance: str = "0 3 * * *"
    # retrain's daily maximum-model-age check (drift and decay events trigger it at any time)
    retrain: str = "0 4 * * *"

    def _check(self, where: str) -> None:
        # Airflow validates a cron only when it parses the DAG file, where a bad one becomes an import error that
        # takes down that DAG for every model and never names this file. croniter is what Airflow's cron
        # timetables use, and they import it at parse time anyway.
        from croniter import croniter

        for f in dataclasses.fields(self):
            expr = getattr(self, f.name)
            if isinstance(expr, str) and not croniter.is_valid(expr):
                raise ConfigError(
                    f"{where}.{f.name}: '{expr}' is not a valid cron expression; expected five fields "
                    "'minute hour day-of-month month day-of-week' (UTC), e.g. '0 1 * * *', or a preset like '@daily'"
                )


@dataclass(frozen=True)
class IngestionPolicy:
    # An outcome file with a column outside the contract is a schema change upstream: by default all its rows
    # go to quarantine (kept, with the reason) until the contract or the export is fixed.
    extra_columns: Literal["quarantine", "ignore"] = "quarantine"
    file_formats: tuple[str, ...] = ("csv", "parquet")


@dataclass(frozen=True)
class DriftPolicy:
    # None: Evidently's defaults by column type and reference size. A method pinned here keeps scores
    # comparable from run to run; per-feature pins win over the model-wide one.
    method: DriftMethod | None = None
    threshold: float | None = None
    feature_methods: dict[str, DriftMethod] = field(default_factory=dict)
    # Per-feature thresholds win over `threshold`, which wins over the method's default (Evidently's order).
    feature_thresholds: dict[str, float] = field(default_factory=dict)
    drift_share: float = 0.5
    # Evidently's default methods raise false alarms in windows under ~200 rows (bench/drift_calibration.py).
    min_rows: int = 200
    # Fewest non-null values of one feature in a window for a verdict on it (a nullable feature of a window with
    # just over min_rows rows still counts; a nearly all-null one is "cannot judge").
    min_values: int = 50
    report_sample_size: int = 5000


@dataclass(frozen=True)
class PerformancePolicy:
    label_delay_days: int = 1
    window_days: int = 1
    min_labelled_share: float = 0.5
    min_rows: int = 200
    tolerance: float = 0.02
    confidence: float = 0.95


@dataclass(frozen=True)
class RetrainPolicy:
    cooldown_hours: float = 24.0
    min_new_rows: int = 1000
    max_model_age_days: int = 30
    training_window_days: int = 30

    def _check(self, where: str) -> None:
        # also the default of the window_days Param, whose schema would otherwise reject its own default
        if not 1 <= self.training_window_days <= MAX_TRAINING_WINDOW_DAYS:
            raise ConfigError(f"{where}.training_window_days: {self.training_window_days} is not allowed; expected "
                              f"a whole number of days from 1 to {MAX_TRAINING_WINDOW_DAYS}")


@dataclass(frozen=True)
class TrainingSpec:
    # a public scikit-learn classifier, or a class listed in platform.allowed_estimators (see estimator_problem)
    estimator: str = EXAMPLE_ESTIMATOR
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    # the last holdout_days lake days of a training window are its out-of-time holdout (evergreen.train.data)
    holdout_days: int = 7
    min_rows: int = 500
    sanity_floor: float = 0.55
    slices: tuple[str, ...] = ()
    seed: int = 42

    def _check(self, where: str) -> None:
        for name, value in self.hyperparameters.items():
            problem = hyperparameter_problem(name, value)
            if problem:
                raise ConfigError(f"{where}.hyperparameters.{name}: {problem}")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    entity_id: str
    label: LabelSpec
    features: tuple[FeatureSpec, ...]
    task: Task = "binary_classification"
    metric: Metric = "roc_auc"
    request_id: str = "request_id"
    timestamp: str = "ts"
    description: str = ""
    start_date: dt.date = dt.date(2026, 11, 1)
    # The last day the daily schedules cover (none: no end): the daily DAGs and retrain's daily check. After it the
    # scheduler creates no scheduled run; manual runs, backfills inside [start_date, end_date] and Asset-triggered
    # runs still work (the demo replays a past month this way).
    end_date: dt.date | None = None
    schedules: Schedules = field(default_factory=Schedules)
    ingestion: IngestionPolicy = field(default_factory=IngestionPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    performance: PerformancePolicy = field(default_factory=PerformancePolicy)
    retrain: RetrainPolicy = field(default_factory=RetrainPolicy)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    # The promotion gate's policy (evergreen.promote.gate), the A/B test's (evergreen.experiment) and the serving
    # app's (evergreen.serve).
    gate: GatePolicy = field(default_factory=GatePolicy)
    ab_test: AbTestPolicy = field(default_factory=AbTestPolicy)
    serving: ServingPolicy = field(default_factory=ServingPolicy)
    # Filled by the loader, never read from a model block: the file the model came from, and the platform's
    # allowed_estimators (so the training steps, which load one model, build only what the platform allows).
    source: str = ""
    platform_estimators: tuple[str, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        return {f.name: f for f in self.features}[name]

    def _check(self, where: str) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"{where}: model name '{self.name}' must match {_NAME.pattern}")
        if not self.features:
            raise ConfigError(f"{where}.features: at least one feature is required")
        if self.end_date is not None and self.end_date < self.start_date:
            raise ConfigError(f"{where}.end_date: {self.end_date} is before start_date {self.start_date}; the daily "
                              "schedules would have no day to run")
        names = [f.name for f in self.features]
        reserved = {self.request_id, self.entity_id, self.label.name, self.timestamp}
        for i, name in enumerate(names):
            if names.index(name) != i:
                raise ConfigError(f"{where}.features[{i}].name: '{name}' is declared twice")
            if name in reserved:
                raise ConfigError(f"{where}.features[{i}].name: '{name}' clashes with an id, label or timestamp column")
        for name in self.drift.feature_methods:
            if name not in names:
                raise ConfigError(f"{where}.drift.feature_methods: unknown feature '{name}'; features: {', '.join(names)}")
        for name in self.drift.feature_thresholds:
            if name not in names:
                raise ConfigError(f"{where}.drift.feature_thresholds: unknown feature '{name}'; features: {', '.join(names)}")
        for name in self.gate.slices:
            if name not in names:
                raise ConfigError(f"{where}.gate.slices: unknown feature '{name}'; features: {', '.join(names)}")
        for name in self.training.slices:
            if name not in names:
                raise ConfigError(f"{where}.training.slices: unknown feature '{name}'; features: {', '.join(names)}")
        holdout_days, window_days = self.training.holdout_days, self.retrain.training_window_days
        if holdout_days < 1:
            raise ConfigError(f"{where}.training.holdout_days: {holdout_days} is not allowed; expected a whole number "
                              "of days >= 1 (the last days of the training window, held out)")
        if holdout_days >= window_days:
            raise ConfigError(f"{where}.training.holdout_days: {holdout_days} leaves no training day in the "
                              f"{window_days}-day window of retrain.training_window_days; make it smaller than "
                              f"{window_days}")
        if not 0 < self.drift.drift_share <= 1:
            raise ConfigError(f"{where}.drift.drift_share: must be in (0, 1]")


@dataclass(frozen=True)
class PlatformConfig:
    # Where alerts go: "log" (task log + store record) always; Airflow notifier connections optional.
    alert_destinations: tuple[str, ...] = ("log",)
    slack_conn_id: str | None = None
    smtp_conn_id: str | None = None
    alert_emails: tuple[str, ...] = ()
    airflow_base_url: str = "http://localhost:8080"
    mlflow_base_url: str | None = None
    # Estimator classes outside scikit-learn that training may import (e.g. xgboost.XGBClassifier), as dotted
    # paths; scikit-learn classifiers need no entry. Only a listed path is ever imported.
    allowed_estimators: tuple[str, ...] = ()

    def _check(self, where: str) -> None:
        for i, path in enumerate(self.allowed_estimators):
            if not _DOTTED.match(path):
                raise ConfigError(f"{where}.allowed_estimators[{i}]: {path!r} is not allowed; expected a dotted path "
                                  "module.Class, e.g. xgboost.XGBClassifier")


@dataclass(frozen=True)
class Config:
    models: dict[str, ModelConfig]
    platform: PlatformConfig

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"model '{name}' is not declared; declared models: {', '.join(sorted(self.models)) or 'none'}"
            ) from None


# --- bounded inputs -------------------------------------------------------------------------------------


def estimator_problem(path: str, allowed: tuple[str, ...] = ()) -> str | None:
    """Why ``path`` may not be imported as a model's estimator, or None when it may.

    Allowed: a public scikit-learn path (``sklearn.<module>.<Class>``, no private ``_`` part) or a path listed in
    ``platform.allowed_estimators``. Decided on the text alone, so nothing outside scikit-learn is imported to find
    out; the training stage then imports it and checks that it is a classifier (``evergreen.train.spec``).
    """
    if path in allowed:
        return None
    listed = ", ".join(allowed) or "none listed"
    expected = (f"expected a scikit-learn classifier such as {EXAMPLE_ESTIMATOR}, or a class listed in "
                f"platform.allowed_estimators ({listed})")
    if not isinstance(path, str) or not _DOTTED.match(path):
        return f"{path!r} is not allowed: not a dotted path module.Class; {expected}"
    if path.split(".", 1)[0] != SKLEARN:
        return f"'{path}' is not allowed: not a scikit-learn estimator; {expected}"
    private = [part for part in path.split(".") if part.startswith("_")]
    if private:
        return f"'{path}' is not allowed: '{private[0]}' is private to scikit-learn; use its public path, {expected}"
    return None


def hyperparameter_problem(name: str, value: Any) -> str | None:
    """Why a hyper-parameter can never be passed to an estimator, or None.

    Names are identifiers (what ``get_params`` returns); values are JSON scalars or flat lists of them (e.g.
    ``hidden_layer_sizes: [64, 32]``): nothing nested, so a value is data and never an object to construct. Whether
    the estimator accepts the name and value is its own check, at build time (``evergreen.train.spec``).
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return "not a parameter name; expected an identifier such as max_depth"
    items = value if isinstance(value, list) else [value]
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in items):
        return f"{value!r} is not allowed; expected a string, number, boolean or null, or a flat list of those"
    return None


_JSON_SCALAR = {"type": ["string", "number", "boolean", "null"]}
# hyperparameter_problem's rule as the JSON schema of the retrain DAG's ``hyperparameters`` Param, which Airflow
# checks at trigger time; the names and values the estimator accepts are checked by the decide task.
HYPERPARAMETERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": _IDENTIFIER.pattern},
    "additionalProperties": {"anyOf": [_JSON_SCALAR, {"type": "array", "items": _JSON_SCALAR}]},
}


# --- loading --------------------------------------------------------------------------------------------

_LOADER_FIELDS = frozenset({"source", "platform_estimators"})


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is dt.date:
        return "a date (YYYY-MM-DD)"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{where}: {value!r} is not allowed; expected {_describe(tp)}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, list):
            raise bad
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ".categories[" in where:
            return str(value)
        raise bad
    if tp is dt.date:
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            raise bad from None
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected {_describe(cls)}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _LOADER_FIELDS}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'; allowed fields: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{name}: required field is missing")
    obj = cls(**kwargs)
    if hasattr(obj, "_check"):
        obj._check(where)
    return obj


def load_config(directory: str | Path | None = None) -> Config:
    """Load and validate every ``*.yaml`` file in the config folder (default: ``include/config``)."""
    import yaml

    folder = Path(directory) if directory is not None else config_dir()
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        raise ConfigError(f"{folder}: no *.yaml config files; declare at least one model (see README, 'Add a model')")
    models: dict[str, ModelConfig] = {}
    platform: PlatformConfig | None = None
    platform_file: Path | None = None
    for path in files:
        try:
            # libyaml's loader when present: the config is read by every DAG file parse, and it is ~8x faster.
            doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping with keys 'models' and/or 'platform'")
        unknown = sorted(set(doc) - {"models", "platform"})
        if unknown:
            raise ConfigError(f"{path}: unknown top-level key '{unknown[0]}'; allowed: models, platform")
        if "platform" in doc:
            if platform is not None:
                raise ConfigError(f"{path}: platform: already declared in {platform_file}; declare it once")
            platform = _build(PlatformConfig, doc["platform"], f"{path}: platform")
            platform_file = path
        block = doc.get("models") or {}
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: models: expected a mapping of model name -> model block")
        for name, spec in block.items():
            if name in models:
                raise ConfigError(f"{path}: models.{name}: already declared in {models[name].source}")
            if not isinstance(spec, dict):
                raise ConfigError(f"{path}: models.{name}: expected a mapping, got {type(spec).__name__}")
            model = _build(ModelConfig, {"name": name, **spec}, f"{path}: models.{name}")
            models[name] = dataclasses.replace(model, source=str(path))
    if not models:
        # Every DAG is generated per model: with none declared Airflow would silently show no DAGs at all.
        raise ConfigError(
            f"{folder}: no model declared in {', '.join(p.name for p in files)}; add a block under 'models:'"
        )
    platform = platform or PlatformConfig()
    for name, model in models.items():  # after every file: the platform block may come from another file
        problem = estimator_problem(model.training.estimator, platform.allowed_estimators)
        if problem:
            raise ConfigError(f"{model.source}: models.{name}.training.estimator: {problem}")
        models[name] = dataclasses.replace(model, platform_estimators=platform.allowed_estimators)
    return Config(models=models, platform=platform)


@lru_cache(maxsize=8)
def _cached(directory: str) -> Config:
    return load_config(directory)


def get_config() -> Config:
    """The validated config of the configured folder, cached per process (DAG files call this at parse time)."""
    return _cached(str(config_dir()))
