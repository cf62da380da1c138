"""The training pipeline's steps as functions, and the whole training in one process.

The pipeline (``include/pipelines/training.py``) is thin: each component calls one ``*_step`` function here with
strings and artifact paths, and gets small values back. :func:`run_training` chains the same functions in one
process, which the bench compares against the pipeline and the tests use as a fast path.
:func:`compile_training_pipeline` is the compiler the retrain DAG's operator calls on the worker.

Nothing a step reads may exist only on the Airflow worker, because on a cluster the steps run in pods: the model
config travels as content (:func:`model_config_content`, the pipeline parameter ``model_config``), the lake is a
URI, the holdout the version is tagged with is written to the lake (:func:`holdout_uri`), and MLflow's credentials
come from the step's environment (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``, read by MLflow itself), never from a
parameter.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evergreen import lake
from evergreen.config import ConfigError, ModelConfig, load_config
from evergreen.paths import REPO_ROOT, lake_uri
from evergreen.train.data import Prepared, Window, prepare, write_holdout
from evergreen.train.evaluate import Evaluation, evaluate
from evergreen.train.modelio import load_model_file, model_file_types, save_model_file
from evergreen.train.register import Lineage, MlflowTarget, Registered, register
from evergreen.train.spec import TrainingError, resolve_hyperparameters, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    prepared: Prepared
    evaluation: Evaluation
    registered: Registered | None  # None when the sanity floor failed


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
        registered = register(model, pipeline, evaluation, lineage, target, prepared.holdout.head(1000),
                              holdout=prepared.holdout)
        save_version_reference(model, prepared.train, registered.version, prepared.fingerprint, target, lake_root)
    return TrainingResult(prepared, evaluation, registered)


def save_version_reference(
    model: ModelConfig, train_rows: Any, version: str, fingerprint: str, target: MlflowTarget,
    lake_root: str | None = None,
) -> str:
    """The registered version's drift reference, built from ``train_rows`` -- the exact rows it was trained on --
    saved under ``lake.reference_dir(model, version)`` with the training data's fingerprint; the version is tagged
    with its URI (``evergreen.reference_uri``), which monitoring loads and checks. Returns the URI.

    Idempotent: a retry (or a re-run that reuses its version) writes the same files and the same tag.
    """
    from mlflow import MlflowClient

    from evergreen.monitor.reference import REFERENCE_URI_TAG, save_training_reference

    uri = lake.reference_dir(model.name, version, lake_root or None)
    save_training_reference(train_rows, model, version=version, data_fingerprint=fingerprint, uri=uri)
    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.registry_uri or target.tracking_uri)
    client.set_model_version_tag(model.name, version, REFERENCE_URI_TAG, uri)
    log.info("%s version %s: reference statistics of its %d training rows at %s", model.name, version,
             len(train_rows), uri)
    return uri


# --- pipeline steps: strings and artifact paths in, small values out -----------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def model_config_content(model: ModelConfig) -> str:
    """The model's validated config as the text of the pipeline parameter ``model_config``.

    A one-model config document (``{"models": {name: block}}``, JSON, which is YAML) that :func:`load_model_config`
    reads back to an equal :class:`ModelConfig`, plus the file it came from, for messages, and the platform settings
    the loader copies into the model (its allowed estimators). The step therefore trains with exactly the config the
    ``decide`` task validated, wherever it runs.
    """
    # The loader fills these itself (from the file and the platform block), a model block may not set them.
    filled = {"name", "source", "platform_estimators"}
    block = {k: v for k, v in dataclasses.asdict(model).items() if k not in filled}
    doc: dict[str, Any] = {"models": {model.name: block}}
    if getattr(model, "platform_estimators", ()):
        doc["platform"] = {"allowed_estimators": list(model.platform_estimators)}
    source = model.source
    if source and os.path.isabs(source):  # named for messages only: the step never opens it
        relative = os.path.relpath(source, REPO_ROOT)
        source = relative if not relative.startswith("..") else os.path.basename(source)
    return json.dumps({**doc, "source": source}, sort_keys=True, default=_json_value)


def load_model_config(model: str, content: str) -> ModelConfig:
    """The :class:`ModelConfig` of ``model`` from :func:`model_config_content`'s text, validated like a config file."""
    where = "pipeline parameter model_config"
    try:
        doc = json.loads(content)
    except ValueError as exc:
        raise TrainingError(f"model '{model}': {where} is not JSON ({exc}); pass model_config_content(model)") from None
    if not isinstance(doc, dict):
        raise TrainingError(f"model '{model}': {where} must be a JSON object with key 'models'")
    source = str(doc.pop("source", "") or "")
    with tempfile.TemporaryDirectory(prefix="evergreen-config-") as tmp:
        path = os.path.join(tmp, f"{model}.yaml")
        with open(path, "w") as fh:
            json.dump(doc, fh)
        try:
            cfg = load_config(tmp).model(model)
        except ConfigError as exc:
            message = str(exc).replace(path, f"{where} (from {source or 'the model config'})")
            raise TrainingError(f"model '{model}': {message}") from None
    return dataclasses.replace(cfg, source=source or where)


def holdout_uri(model: str, fingerprint: str, lake_root: str | None = None) -> str:
    """Where the holdout of a training's data lives in the lake: ``<lake>/<model>/holdout/fingerprint=<sha>/``.

    Keyed by the data fingerprint, so a re-run on the same data writes the same rows to the same place, and the
    version's ``evergreen.holdout_uri`` tag names a file that Airflow, a cluster and a person can all read.
    """
    return f"{(lake_root or lake_uri()).rstrip('/')}/{model}/holdout/fingerprint={fingerprint}/part-0.parquet"


def prepare_step(
    *, model: str, window_start: str, window_end: str, hyperparameters: str, lake_root: str, model_config: str,
    train_path: str, holdout_path: str, train_metadata: dict, holdout_metadata: dict,
) -> tuple[str, int, str]:
    """prepare; returns (fingerprint, rows, holdout URI in the lake)."""
    cfg = load_model_config(model, model_config)
    window = Window.parse(window_start, window_end)
    prepared = prepare(cfg, window, lake_root=lake_root or None, hyperparameters=hyperparameters)
    prepared.train.to_parquet(train_path, index=False)
    write_holdout(prepared.holdout, holdout_path)
    kept = lake.write_parquet_atomic(prepared.holdout, holdout_uri(model, prepared.fingerprint, lake_root or None))
    common = {"model": model, "training_window": window.tag, "data_fingerprint": prepared.fingerprint}
    train_metadata.update({**common, "rows": len(prepared.train), "partitions": prepared.partitions})
    holdout_metadata.update({**common, "rows": len(prepared.holdout), "lake_uri": kept})
    return prepared.fingerprint, len(prepared.train) + len(prepared.holdout), kept


def train_step(
    *, model: str, hyperparameters: str, model_config: str, fingerprint: str, train_path: str, model_path: str,
    model_metadata: dict,
) -> None:
    import pandas as pd

    cfg = load_model_config(model, model_config)
    frame = pd.read_parquet(train_path)
    pipeline = train(cfg, frame, hyperparameters)
    trusted = save_model_file(pipeline, model_path)
    model_metadata.update({
        "training_rows": len(frame),
        "format": "skops", "skops_trusted_types": trusted, "estimator": cfg.training.estimator,
        "hyperparameters": resolve_hyperparameters(cfg, hyperparameters), "data_fingerprint": fingerprint,
    })


def evaluate_step(
    *, model: str, model_config: str, holdout_path: str, model_path: str,
    log_metric: Callable[[str, float], None] | None = None,
) -> tuple[str, str]:
    import pandas as pd

    cfg = load_model_config(model, model_config)
    evaluation = evaluate(cfg, load_model_file(model_path), pd.read_parquet(holdout_path))
    if log_metric is not None:  # shown on the Kubeflow run page
        for key, value in ((f"holdout_{evaluation.metric}", evaluation.value),
                           (f"holdout_{evaluation.metric}_ci_low", evaluation.ci_low),
                           (f"holdout_{evaluation.metric}_ci_high", evaluation.ci_high)):
            if math.isfinite(value):
                log_metric(key, value)
    return ("register" if evaluation.passed else "below_floor"), evaluation.to_json()


def register_step(
    *, model: str, window_start: str, window_end: str, hyperparameters: str, model_config: str,
    mlflow_tracking_uri: str, mlflow_registry_uri: str, mlflow_artifact_location: str, fingerprint: str,
    evaluation: str, airflow_dag_id: str, airflow_run_id: str, kfp_run_id: str, holdout_uri: str,
    holdout_path: str, model_path: str, train_path: str, lake_root: str, training_rows: int = 0,
) -> str:
    """register; MLflow's credentials come from this process's environment (``MLFLOW_TRACKING_USERNAME`` /
    ``_PASSWORD``: the local runner's subprocess environment, a Kubernetes Secret on a cluster), not a parameter."""
    import pandas as pd
    import pyarrow.parquet as pq

    cfg = load_model_config(model, model_config)
    evaluated = Evaluation.from_json(evaluation)
    example = next(pq.ParquetFile(holdout_path).iter_batches(batch_size=1000)).to_pandas()
    lineage = Lineage(
        window=Window.parse(window_start, window_end), fingerprint=fingerprint, holdout_uri=holdout_uri,
        training_rows=training_rows, hyperparameters=resolve_hyperparameters(cfg, hyperparameters),
        airflow_dag_id=airflow_dag_id, airflow_run_id=airflow_run_id, kfp_run_id=kfp_run_id,
    )
    target = MlflowTarget(mlflow_tracking_uri, mlflow_registry_uri, mlflow_artifact_location)
    version = register(
        cfg, load_model_file(model_path), evaluated, lineage, target, example, trusted=model_file_types(model_path),
        holdout=pd.read_parquet(holdout_path),  # the evidence (curves, confusion matrix) is on the whole holdout
    ).version
    # prepare's train_data artifact: the very rows train fitted on
    save_version_reference(cfg, pd.read_parquet(train_path), version, fingerprint, target, lake_root)
    return version


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
