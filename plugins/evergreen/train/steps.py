"""The training pipeline's steps as functions, and the whole training in one process.

The pipeline (``include/pipelines/training.py``) is thin: each component calls one ``*_step`` function here with
strings and artifact paths, and gets small values back. :func:`run_training` chains the same functions in one
process, which the bench compares against the pipeline and the tests use as a fast path.
:func:`compile_training_pipeline` is the compiler the retrain DAG's operator calls on the worker.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from evergreen.config import ConfigError, ModelConfig, load_config
from evergreen.paths import REPO_ROOT
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
        registered = register(model, pipeline, evaluation, lineage, target, prepared.holdout.head(1000))
    return TrainingResult(prepared, evaluation, registered)


# --- pipeline steps: strings and artifact paths in, small values out -----------------------------------------


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
