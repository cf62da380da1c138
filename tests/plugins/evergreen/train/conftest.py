"""Fixtures of the training tests: a simulated lake, a window of it, the prepared split and a fitted model, and
a real SQLite MLflow tracking store and registry with one direct training run registered in it."""

from __future__ import annotations

import pytest
from train_helpers import DAYS, FIRST, ROWS_PER_DAY, fast, write_lake

from evergreen.config import load_config
from evergreen.paths import REPO_ROOT
from evergreen.train.data import Prepared, Window, prepare
from evergreen.train.register import MlflowTarget
from evergreen.train.spec import train
from evergreen.train.steps import TrainingResult, run_training


@pytest.fixture(scope="module")
def model():
    return fast(load_config(REPO_ROOT / "include" / "config").model("churn"))


@pytest.fixture(scope="module")
def lake_root(model, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("lake"))
    write_lake(model, root, FIRST, DAYS, ROWS_PER_DAY)
    return root


@pytest.fixture(scope="module")
def window() -> Window:
    return Window.parse("2026-11-02", "2026-11-06")  # four lake days


@pytest.fixture(scope="module")
def prepared(model, lake_root, window) -> Prepared:
    return prepare(model, window, lake_root=lake_root)


@pytest.fixture(scope="module")
def fitted(model, prepared):
    return train(model, prepared.train)


@pytest.fixture(scope="module")
def mlflow_target(tmp_path_factory) -> MlflowTarget:
    root = tmp_path_factory.mktemp("mlflow")
    return MlflowTarget(f"sqlite:///{root / 'mlflow.db'}", "", (root / "artifacts").as_uri())


@pytest.fixture(scope="module")
def client(mlflow_target):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_target.tracking_uri, registry_uri=mlflow_target.tracking_uri)


@pytest.fixture(scope="module")
def direct_run(model, lake_root, window, mlflow_target, tmp_path_factory) -> TrainingResult:
    return run_training(
        model, window, mlflow_target, holdout_path=tmp_path_factory.mktemp("holdout") / "holdout.parquet",
        lake_root=lake_root, airflow_dag_id="retrain_churn", airflow_run_id="manual__2026-11-06", kfp_run_id="kfp-1",
    )
