"""The Evergreen training pipeline (KFP v2 DSL): prepare -> train -> evaluate -> register (behind ``dsl.If``).

Interface (what the Kubeflow operator passes and gets back)

Parameters (all strings; dates are UTC ``YYYY-MM-DD``):
    model                     model name (a block of ``include/config/*.yaml``), also the registered model name
    window_start, window_end  training window ``[start, end)``: lake days ``start <= dt < end``
    model_config              the model's config as content (``evergreen.train.steps.model_config_content(model)``):
                              a pod has no access to the config folder of the Airflow worker
    hyperparameters           JSON object overriding ``training.hyperparameters`` of the config (default ``"{}"``)
    mlflow_tracking_uri       MLflow tracking URI, without credentials (``MlflowHook.tracking_uri``)
    mlflow_registry_uri       registry URI, ``""`` = the tracking URI (``MlflowHook.registry_uri``)
    mlflow_artifact_location  artifact root used when the training experiment is created, ``""`` = server default
                              (``MlflowHook.artifact_location or ""``)
    lake_root                 root URI of the lake (``evergreen.paths.lake_uri()``); the holdout is written there too
    airflow_dag_id, airflow_run_id   lineage tags on the version (``""`` when run outside Airflow)
    kfp_run_id                lineage tag; ``""`` = the run id Kubeflow gives the run (``{{$.pipeline_job_uuid}}``)

No parameter carries a credential. The steps that talk to MLflow read ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` from their environment (MLflow's own settings): the local runner sets them in the
subprocess environment from the ``mlflow_default`` Connection; on a cluster, mount them from a Kubernetes Secret
into the pipeline's pods (see the README, "To use a real cluster").

Output:
    the pipeline's single output (``Output`` / ``.output`` of the kfp.local run) is the registered model version
    (``"3"``), or ``""`` when the holdout metric missed ``training.sanity_floor`` (nothing registered).
    In remote mode read it from MLflow instead: ``evergreen.train.register.find_registered_version(client, model,
    airflow_run_id=..., kfp_run_id=...)`` (the version tags carry both ids). A re-run of the same Airflow run on
    the same data returns the version it registered before instead of adding another.

Compile with ``compile_pipeline(path)`` (or ``python include/pipelines/training.py out.yaml``); from the package,
without ``include/`` on ``sys.path``: ``evergreen.train.steps.compile_training_pipeline(path)`` /
``evergreen.train.steps.pipeline_module()``.

Bad input (empty/too-small window, single-class label, features missing from a partition, a hyper-parameter the
estimator rejects) fails the ``prepare`` step with a :class:`evergreen.train.data.TrainingDataError` /
:class:`evergreen.train.spec.HyperparameterError` message naming the window, partition or parameter; nothing is
registered.

Every step runs with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``; models pass between steps as skops files.
Step caching is switched off on every step: ``prepare`` reads the lake, whose partitions can change for the same
window (a re-ingested day), and everything downstream consumes its fresh artifacts; ``register`` has a side effect.

Component bodies are thin: each calls one step of :mod:`evergreen.train.steps` (installed in the runner's
environment). On a cluster every step runs in the project image (the Dockerfile's, ``evergreen:latest`` as
docker-compose.yaml builds it), which carries the ``evergreen`` package and kfp; set ``EVERGREEN_PIPELINE_IMAGE``
when compiling to the name the cluster pulls it by (with its registry prefix).
"""

# No `from __future__ import annotations`: KFP reads the component annotations as real types.
import os
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

PIPELINE_NAME = "evergreen-training"
#: The project image (Dockerfile; docker-compose.yaml's EVERGREEN_IMAGE default). SubprocessRunner ignores it.
DEFAULT_IMAGE = "evergreen:latest"
IMAGE = os.environ.get("EVERGREEN_PIPELINE_IMAGE") or DEFAULT_IMAGE
_COMPONENT = {"base_image": IMAGE, "install_kfp_package": False}


@dsl.component(**_COMPONENT)
def prepare(
    model: str,
    window_start: str,
    window_end: str,
    hyperparameters: str,
    lake_root: str,
    model_config: str,
    train_data: Output[Dataset],
    holdout_data: Output[Dataset],
) -> NamedTuple("PrepareOutputs", fingerprint=str, rows=int, holdout_uri=str):
    """Read the window's labelled partitions, validate them, hold out the window's last ``training.holdout_days``
    lake days (the model trains on the days before); keep the holdout in the lake too (its URI is the version's
    lineage)."""
    from evergreen.train import steps

    return steps.prepare_step(
        model=model,
        window_start=window_start,
        window_end=window_end,
        hyperparameters=hyperparameters,
        lake_root=lake_root,
        model_config=model_config,
        train_path=train_data.path,
        holdout_path=holdout_data.path,
        train_metadata=train_data.metadata,
        holdout_metadata=holdout_data.metadata,
    )


@dsl.component(**_COMPONENT)
def train(
    model: str,
    hyperparameters: str,
    model_config: str,
    fingerprint: str,
    train_data: Input[Dataset],
    trained_model: Output[Model],
):
    """Fit the scikit-learn pipeline of the model's config; save it with skops (no pickle)."""
    from evergreen.train import steps

    steps.train_step(
        model=model,
        hyperparameters=hyperparameters,
        model_config=model_config,
        fingerprint=fingerprint,
        train_path=train_data.path,
        model_path=trained_model.path,
        model_metadata=trained_model.metadata,
    )


@dsl.component(**_COMPONENT)
def evaluate(
    model: str,
    model_config: str,
    holdout_data: Input[Dataset],
    trained_model: Input[Model],
    metrics: Output[Metrics],
) -> NamedTuple("EvaluateOutputs", decision=str, evaluation=str):
    """Holdout metric with a bootstrap CI and per-slice metrics; decide whether the sanity floor passes."""
    from evergreen.train import steps

    return steps.evaluate_step(
        model=model,
        model_config=model_config,
        holdout_path=holdout_data.path,
        model_path=trained_model.path,
        log_metric=metrics.log_metric,
    )


@dsl.component(**_COMPONENT)
def register(
    model: str,
    window_start: str,
    window_end: str,
    hyperparameters: str,
    model_config: str,
    mlflow_tracking_uri: str,
    mlflow_registry_uri: str,
    mlflow_artifact_location: str,
    fingerprint: str,
    evaluation: str,
    airflow_dag_id: str,
    airflow_run_id: str,
    kfp_run_id: str,
    kfp_job_id: str,
    holdout_uri: str,
    lake_root: str,
    train_data: Input[Dataset],
    holdout_data: Input[Dataset],
    trained_model: Input[Model],
) -> str:
    """Log the model to MLflow and create a candidate version with lineage tags; build the version's drift
    reference from its training rows (``train_data``) into the lake; returns the version."""
    from evergreen.train import steps

    return steps.register_step(
        model=model,
        window_start=window_start,
        window_end=window_end,
        hyperparameters=hyperparameters,
        model_config=model_config,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_registry_uri=mlflow_registry_uri,
        mlflow_artifact_location=mlflow_artifact_location,
        fingerprint=fingerprint,
        evaluation=evaluation,
        airflow_dag_id=airflow_dag_id,
        airflow_run_id=airflow_run_id,
        kfp_run_id=kfp_run_id or kfp_job_id,
        holdout_uri=holdout_uri,
        holdout_path=holdout_data.path,
        model_path=trained_model.path,
        train_path=train_data.path,
        lake_root=lake_root,
        training_rows=int(trained_model.metadata.get("training_rows", 0)),
    )


@dsl.component(**_COMPONENT)
def below_floor(model: str, evaluation: str) -> str:
    """The sanity floor failed: log why and register nothing (the empty version says so to the caller)."""
    from evergreen.train import steps

    return steps.below_floor_step(model=model, evaluation=evaluation)


@dsl.pipeline(name=PIPELINE_NAME, description="Evergreen: retrain a model on a lake window and register a candidate.")
def training_pipeline(
    model: str,
    window_start: str,
    window_end: str,
    model_config: str,
    mlflow_tracking_uri: str,
    lake_root: str,
    hyperparameters: str = "{}",
    mlflow_registry_uri: str = "",
    mlflow_artifact_location: str = "",
    airflow_dag_id: str = "",
    airflow_run_id: str = "",
    kfp_run_id: str = "",
) -> str:
    prep = prepare(
        model=model,
        window_start=window_start,
        window_end=window_end,
        hyperparameters=hyperparameters,
        lake_root=lake_root,
        model_config=model_config,
    )
    fit = train(
        model=model,
        hyperparameters=hyperparameters,
        model_config=model_config,
        # An input of train, so any cache key (if a cluster forces caching on) changes with the data.
        fingerprint=prep.outputs["fingerprint"],
        train_data=prep.outputs["train_data"],
    )
    scored = evaluate(
        model=model,
        model_config=model_config,
        holdout_data=prep.outputs["holdout_data"],
        trained_model=fit.outputs["trained_model"],
    )
    with dsl.If(scored.outputs["decision"] == "register", name="sanity-floor-passed"):
        reg = register(
            model=model,
            window_start=window_start,
            window_end=window_end,
            hyperparameters=hyperparameters,
            model_config=model_config,
            mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_registry_uri=mlflow_registry_uri,
            mlflow_artifact_location=mlflow_artifact_location,
            fingerprint=prep.outputs["fingerprint"],
            evaluation=scored.outputs["evaluation"],
            airflow_dag_id=airflow_dag_id,
            airflow_run_id=airflow_run_id,
            kfp_run_id=kfp_run_id,
            kfp_job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            holdout_uri=prep.outputs["holdout_uri"],
            lake_root=lake_root,
            train_data=prep.outputs["train_data"],
            holdout_data=prep.outputs["holdout_data"],
            trained_model=fit.outputs["trained_model"],
        )
    with dsl.Else(name="sanity-floor-missed"):
        skipped = below_floor(model=model, evaluation=scored.outputs["evaluation"])
    for task in (prep, fit, scored, reg, skipped):
        # Never reuse an old result: prepare must re-read the lake, register has a side effect.
        task.set_caching_options(False)
        # The platform never unpickles a model, here or on a cluster whose image forgot to say so.
        task.set_env_variable("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    return dsl.OneOf(reg.output, skipped.output)


def compile_pipeline(path: "str | os.PathLike[str]") -> str:
    """Compile the pipeline to a KFP IR YAML file at ``path`` and return the path."""
    compiler.Compiler().compile(pipeline_func=training_pipeline, package_path=str(path))
    return str(path)


if __name__ == "__main__":  # python include/pipelines/training.py out.yaml
    import sys

    print(compile_pipeline(sys.argv[1] if len(sys.argv) > 1 else "training_pipeline.yaml"))
