"""Registration: log a model that cleared its sanity floor to MLflow and make it a candidate version, with the
lineage that ties it to its data and its runs.

The run goes to the experiment ``evergreen/<model>/training``; the version of the registered model ``<model>`` is
tagged ``evergreen.status=candidate`` plus the ``evergreen.*`` lineage tags (training window, data fingerprint,
holdout, metric, Airflow and Kubeflow run ids). Registering never moves an alias: promotion does that. A retry of
the same Airflow run on the same data finds the version it already made (:func:`find_registered_version`) instead
of adding another. Where MLflow is comes in as a :class:`MlflowTarget` (the caller resolves the Connection): the
pipeline's components run without Airflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evergreen.config import ModelConfig
from evergreen.train.data import Window
from evergreen.train.evaluate import Evaluation
from evergreen.train.evidence import collect_evidence, log_evidence
from evergreen.train.modelio import TRUSTED_TYPES, UntrustedModelError, model_bytes
from evergreen.train.spec import TrainingError
from evergreen.tracking import DATA_FINGERPRINT_TAG, TAG, TRAINING_WINDOW_TAG, get_or_create_experiment, quote

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

log = logging.getLogger(__name__)

STATUS_CANDIDATE = "candidate"


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
class Registered:
    model: str
    version: str
    run_id: str
    model_uri: str  # models:/<name>/<version>
    reused: bool = False  # True when a re-run of the same Airflow run found its version already registered


@contextlib.contextmanager
def fluent_mlflow(target: MlflowTarget) -> Iterator[None]:
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
    terms = [f"name={quote(model)}"]
    wanted = {"airflow_run_id": airflow_run_id, "kfp_run_id": kfp_run_id, "airflow_dag_id": airflow_dag_id,
              "data_fingerprint": fingerprint}
    for key, value in wanted.items():
        if value:
            terms.append(f"tags.`{TAG}{key}`={quote(value)}")
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
        TRAINING_WINDOW_TAG: lineage.window.tag,
        # the out-of-time holdout: the window's last training.holdout_days days, [start, end) as the window's tag
        f"{TAG}holdout_days": str(model.training.holdout_days),
        f"{TAG}holdout_window": lineage.window.split(model.training.holdout_days)[1].tag,
        DATA_FINGERPRINT_TAG: lineage.fingerprint,
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
    *,
    holdout: pd.DataFrame | None = None,
    champion: Pipeline | None = None,
) -> Registered:
    """Log the model to MLflow and create a candidate version of the registered model ``model.name``.

    Idempotent per Airflow run: a retry of the same run on the same data returns the version it already made.
    ``trusted`` is the model's skops type list when already known (the pipeline read it from the model file);
    MLflow re-loads the saved model with exactly this list, so a wrong one fails the registration.
    The run also gets the evidence of :mod:`evergreen.train.evidence` on ``holdout`` (``example`` when not given),
    compared with ``champion``, else with the registry's champion when it loads and scores those rows.
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
    with fluent_mlflow(target):
        experiment_id = get_or_create_experiment(client, training_experiment(model.name), target.artifact_location)
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
            evidence = collect_evidence(model, pipeline, example if holdout is None else holdout,
                                        champion=champion, client=client, target=target)
            log_evidence(client, run.info.run_id, evidence, skip_metrics={f"holdout_{m}"})
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
