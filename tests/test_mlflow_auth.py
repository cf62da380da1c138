"""The credential path for real: a real MLflow server with its basic-auth app, a non-admin user whose password is
planted in the ``mlflow_default`` Connection, and the retrain and monitoring DAGs run through ``dag.test()``.

The user's password must reach MLflow (the version is registered and the monitoring run logged by that user, with
artifacts proxied through the server) and nothing else: not an XCom, a rendered template field or anything else in
the Airflow metadata DB, not a store record (decisions, drift records, alerts), not a file the local Kubeflow runner
wrote (the arguments file, results, step outputs, the package), not the parameters or the spec of a run submitted to
a cluster (a fake Kubeflow API), not what MLflow itself stored, and not the task logs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
import urllib.parse
from pathlib import Path

import pendulum
import pytest
from fakes.kfp_api import FakeKfpApiServer
from mlflow_server import MlflowAuthServer

from evergreen import lake
from evergreen.config import get_config

pytestmark = pytest.mark.slow

USER = "trainer"
# A "/" and a space: the characters that break a password written into a URL.
PASSWORD = f"pl4nted/{secrets.token_urlsafe(12)} x"
FORMS = (PASSWORD, urllib.parse.quote(PASSWORD, safe=""), urllib.parse.quote_plus(PASSWORD))
LOCAL = pendulum.datetime(2026, 11, 10, 5, tz="UTC")  # not test_retrain's date: other run ids, other run folders
REMOTE = pendulum.datetime(2026, 11, 10, 6, tz="UTC")
DRIFTED = dt.date(2026, 11, 12)
FAST = {"n_estimators": 20, "max_depth": 6}


def conf(**overrides) -> dict:
    return {"force": False, "dry_run": False, "window_start": None, "window_end": None, "window_days": 30,
            "hyperparameters": FAST, **overrides}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with MlflowAuthServer(tmp_path_factory.mktemp("mlflow-auth")) as srv:
        srv.create_user(USER, PASSWORD)
        yield srv


@pytest.fixture(scope="module")
def env(server, tmp_path_factory, airflow_db):
    """Its own store, lake and EVERGREEN_HOME (so its kfp.local run folders are its own); MLflow = the server, as
    the non-admin user."""
    from evergreen_demo import simulate

    root = tmp_path_factory.mktemp("credentials")
    model = get_config().model("churn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVERGREEN_HOME", str(root / "home"))
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({
            "conn_type": "mlflow", "host": "127.0.0.1", "port": server.port, "schema": "http",
            "login": USER, "password": PASSWORD}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        mp.delenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", raising=False)
        for i in range(8):  # scoring days 11-01..11-08, lake days 11-02..11-09: 3200 labelled rows
            day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
            frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 400))
            for lake_root in (str(root / "lake"), "memory://evergreen-auth-lake"):  # the remote run's lake
                lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1), lake_root))
        yield {"root": root, "model": model, "mp": mp}


@pytest.fixture(scope="module")
def client(env):
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook().get_conn()


@pytest.fixture(scope="module")
def runs(env, dagbag, server, client, request):
    """One local retrain (bootstrap, kfp.local), one remote retrain (a fake Kubeflow API), one drifted monitoring
    day against the bootstrapped version as champion; with the output they printed (the task logs)."""
    from evergreen.hooks.store import StoreHook
    from evergreen_demo.simulate import simulate_day

    def run_dag(dag_id: str, logical_date, conf: dict | None = None):  # tests/conftest.py's, module-scoped
        import copy

        dag = dagbag.get_dag(dag_id)
        params = copy.deepcopy(dag.params)
        try:
            return dag.test(logical_date=pendulum.parse(str(logical_date)), run_conf=conf)
        finally:
            dag.params = params

    capture = request.config.pluginmanager.getplugin("capturemanager")
    capture.read_global_capture()  # start the log from here
    local = run_dag("retrain_churn", LOCAL, conf=conf())
    with FakeKfpApiServer() as kfp:
        kfp.run_plan = ["SUCCEEDED"]
        env["mp"].setenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", json.dumps({"conn_type": "kubeflow", "host": kfp.url}))
        env["mp"].setenv("EVERGREEN_LAKE_URI", "memory://evergreen-auth-lake")
        try:
            remote = run_dag("retrain_churn", REMOTE, conf=conf(force=True))
        finally:
            env["mp"].delenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT")
            env["mp"].setenv("EVERGREEN_LAKE_URI", str(env["root"] / "lake"))
        submitted = list(kfp.runs.values())
        specs = [v["pipeline_spec"] for v in kfp.versions.values()]

    (version,) = client.search_model_versions("name='churn'")
    client.set_registered_model_alias("churn", "champion", version.version)  # the user owns the model
    day = simulate_day(env["model"], DRIFTED, 3000, model_version=str(version.version), drift=1.5)
    StoreHook().get_conn().upsert_predictions("churn", day.predictions, env["model"].feature_names)
    drift = run_dag("monitor_drift_churn", f"{DRIFTED + dt.timedelta(days=1)}T12:00:00+00:00")
    out, err = capture.read_global_capture()
    sys.stdout.write(out)  # still shown with a failure
    sys.stderr.write(err)
    return {"local": local, "remote": remote, "drift": drift, "version": version, "submitted": submitted,
            "specs": specs, "logs": out + err}


def states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def assert_clean(text: str, where: str) -> None:
    for form in FORMS:
        assert form not in text, f"the planted password is in {where}"


def test_the_server_refuses_anonymous_requests(server):
    assert server.request("GET", "/api/2.0/mlflow/experiments/search", auth=None,
                          params={"max_results": 1}).status_code == 401


def test_the_non_admin_user_trains_registers_and_monitors(runs, server, client):
    assert states(runs["local"]) == {"decide": "success", "train": "success", "register_candidate": "success"}
    version = runs["version"]
    assert version.tags["evergreen.status"] == "candidate"
    assert version.tags["evergreen.airflow_run_id"] == runs["local"].run_id
    # registered by the user: the server made the user the owner of what they created
    assert server.permission("registered_model", "churn", USER) == "MANAGE"
    training = client.get_experiment_by_name("evergreen/churn/training")
    assert server.permission("experiment", training.experiment_id, USER) == "MANAGE"
    # the model's files went through the server's artifact proxy, with the user's credentials (kfp.local step)
    assert client.get_model_version_download_uri("churn", version.version).startswith("mlflow-artifacts:")
    assert "evaluation.json" in [f.path for f in client.list_artifacts(version.run_id)]
    assert any(server.artifacts.rglob("MLmodel"))

    # the monitoring run exists, with its report uploaded through the proxy by the Airflow task itself
    assert states(runs["drift"])["detect"] == "success"
    monitoring = client.get_experiment_by_name("evergreen/churn/monitoring")
    assert server.permission("experiment", monitoring.experiment_id, USER) == "MANAGE"
    (run,) = client.search_runs([monitoring.experiment_id],
                                filter_string=f"tags.`evergreen.monitoring_key` = 'drift/churn/{DRIFTED}'")
    assert run.data.tags["evergreen.status"] == "ok" and run.data.metrics["dataset_drift"] == 1.0
    assert client.list_artifacts(run.info.run_id), "the drift report was not uploaded"

    # the remote run was submitted (the fake cluster runs nothing, so nothing was registered by it)
    assert states(runs["remote"])["train"] == "success"
    (submitted,) = runs["submitted"]
    assert submitted.parameters["mlflow_tracking_uri"] == server.url
    assert submitted.parameters["lake_root"] == "memory://evergreen-auth-lake"


def test_the_password_is_in_no_output(runs, env, server):
    from evergreen.hooks.store import StoreHook

    store = StoreHook().get_conn()
    kinds = {"retrain_decision": 2, "drift": 1, "alert": 1}
    for kind, at_least in kinds.items():
        records = store.list_records(kind, "churn")
        assert len(records) >= at_least, f"expected {kind} records"
        assert_clean(json.dumps([r.payload for r in records], default=str), f"the store's {kind} records")
    for path in Path(env["root"]).glob("store.db*"):
        assert_clean(path.read_bytes().decode("latin-1"), str(path))

    # every XCom of the three runs, and the whole metadata DB (rendered template fields, DAG run conf, ...)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        xcoms = [row.value for run in (runs["local"], runs["remote"], runs["drift"])
                 for row in session.query(XComModel).filter(XComModel.run_id == run.run_id,
                                                            XComModel.dag_id == run.dag_id)]
    assert len(xcoms) >= 6
    assert_clean(json.dumps(xcoms, default=str), "an XCom")
    database = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    for path in Path(database).parent.glob(Path(database).name + "*"):
        assert_clean(path.read_bytes().decode("latin-1"), str(path))

    # everything the local runner wrote: arguments file, result, step outputs, artifacts, packages
    written = [p for p in (Path(env["root"]) / "home").rglob("*") if p.is_file()]
    assert any(p.name == "arguments.json" for p in written) and any(p.name == "result.json" for p in written)
    for path in written:
        assert_clean(path.read_bytes().decode("latin-1"), str(path))

    # the run submitted to the cluster: its parameters and the compiled spec
    assert_clean(json.dumps([r.parameters for r in runs["submitted"]] + runs["specs"]), "the Kubeflow run")

    # what MLflow stored (params, tags, artifacts): the server never sees the password except in the header
    for path in [server.backend_db, *server.artifacts.rglob("*")]:
        if path.is_file():
            assert_clean(path.read_bytes().decode("latin-1"), str(path))

    # the task logs (dag.test prints them; Airflow masks the Connection's password anyway)
    assert "Running pipeline" in runs["logs"] and "Submitted Kubeflow run" in runs["logs"]
    assert_clean(runs["logs"], "the task logs")


def test_no_link_is_made_from_the_tracking_uri(runs, env):
    from evergreen.hooks.store import StoreHook

    store = StoreHook().get_conn()
    # platform.mlflow_base_url is not set in the demo config: no MLflow link, rather than one from the tracking URI
    assert get_config().platform.mlflow_base_url is None
    assert store.get_record("drift", f"churn/{DRIFTED}").payload["mlflow"]["url"] is None
    (alert,) = store.list_records("alert", "churn")
    assert alert.payload["links"]["mlflow_run"] is None
    assert alert.payload["links"]["airflow_run"].startswith(get_config().platform.airflow_base_url)
