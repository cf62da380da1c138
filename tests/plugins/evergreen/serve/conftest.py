"""Fixtures of the serving tests: a real MLflow registry (SQLite) with two small churn versions trained by the
platform's own training steps (helpers in serving_support.py).

The registry is this package's own (Connection ``serve_test_mlflow``, an ``AIRFLOW_CONN_*`` variable set for the
session under a name nothing else reads), so the tests never touch another module's MLflow or the embedded one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest

from evergreen.config import get_config
from serving_support import CONN_ID, Registry

V1_PARAMS = {"n_estimators": 20, "max_depth": 6}
V2_PARAMS = {"n_estimators": 5, "max_depth": 2}


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry with two registered churn versions (v1: 20 trees, v2: 5 shallow trees); no alias set."""
    from mlflow import MlflowClient

    from evergreen import lake
    from evergreen.train.data import Window
    from evergreen.train.modelio import load_model
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import run_training
    from evergreen_demo import simulate

    root = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    model = get_config().model("churn")
    lake_root = str(root / "lake")
    for i in range(4):  # lake days 11-02..11-05: three training days and one holdout day, 600 rows each
        day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 600))
        lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1), lake_root))
    target = MlflowTarget(uri, uri, (root / "artifacts").as_uri())
    versions = []
    for run, params in (("v1", V1_PARAMS), ("v2", V2_PARAMS)):
        result = run_training(model, Window.parse("2026-11-02", "2026-11-06"), target,
                              holdout_path=root / f"holdout-{run}.parquet", lake_root=lake_root,
                              hyperparameters=params, airflow_dag_id="test", airflow_run_id=run)
        assert result.registered is not None, f"{run}: the holdout metric missed the sanity floor"
        versions.append(result.registered.version)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({"conn_type": "mlflow", "extra": {"uri": uri}}))
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        pipelines = {v: load_model(f"models:/churn/{v}", target) for v in versions}
        yield Registry(root, client, uri, versions[0], versions[1], pipelines)


