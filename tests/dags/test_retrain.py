"""retrain_churn through Airflow's dag.test(): the decision, its record, the training pipeline through kfp.local
for real, and the candidate it registers in a real MLflow registry.

The module uses its own store, MLflow database and lake (Connections and EVERGREEN_LAKE_URI from the environment),
so what other test modules register cannot change the policy's answers here.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json

import pendulum
import pytest

from dag_runs import states
from evergreen import lake
from evergreen_demo import simulate
from evergreen.config import get_config
from evergreen.train import policy

pytestmark = pytest.mark.slow

DAG_ID = "retrain_churn"
LOGICAL = pendulum.datetime(2026, 11, 10, 4, tz="UTC")  # the window ends on 2026-11-10 (exclusive)
DEFAULT_WINDOW = "2026-10-11/2026-11-10"  # retrain.training_window_days = 30
FAST = {"n_estimators": 20, "max_depth": 6}  # keep each training around a second


def conf(**overrides) -> dict:
    """Every Param, defaults unless overridden. dag.test() runs tasks in this process on the DagBag's DAG object,
    and Airflow's Param.resolve() stores a run's conf value on that shared Param: a value left out would be the
    previous run's."""
    return {"force": False, "dry_run": False, "window_start": None, "window_end": None, "window_days": 30,
            "hyperparameters": FAST, **overrides}


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                  json.dumps({"conn_type": "mlflow", "extra": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        model = get_config().model("churn")
        for i in range(8):  # scoring days 11-01..11-08, landing (lake) days 11-02..11-09: 3200 labelled rows
            day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
            frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 400))
            lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1)))
        yield root


@pytest.fixture
def store():
    from evergreen.hooks.store import StoreHook

    return StoreHook().get_conn()


@pytest.fixture
def registry():
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook().get_conn()


def versions(registry) -> list:
    return sorted(registry.search_model_versions("name='churn'"), key=lambda v: int(v.version))


def decision(store, run) -> dict:
    record = store.get_record("retrain_decision", f"churn/{run.run_id}")
    assert record is not None, f"no decision recorded for {run.run_id}"
    return record.payload


def train_result(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.execute(XComModel.get_many(run_id=run.run_id, dag_ids=DAG_ID, task_ids="train",
                                                  key="return_value").with_only_columns(XComModel.value)).scalar()


@pytest.fixture
def run_as(run_dag, monkeypatch):
    """Run the DAG as the scheduler would: a ``scheduled`` run, or an ``asset_triggered`` run that consumed real
    AssetEvent rows. dag.test() only makes manual runs, so the run it creates is given that run type (and the
    consumed events) in the metadata DB before any task starts; the tasks read both through the Execution API."""

    def _run(run_type: str, events: list[dict] = ()):
        import airflow.models.dagrun as dagrun_module
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.types import DagRunType
        from sqlalchemy import select

        real = dagrun_module.get_or_create_dagrun

        def as_scheduler_would(*, session, **kwargs):
            dag_run = real(session=session, **kwargs)
            for event in events:
                asset = session.scalar(select(AssetModel).where(AssetModel.uri == event["uri"]))
                row = AssetEvent(asset_id=asset.id, extra=event["extra"], source_dag_id=event["source_dag_id"],
                                 source_run_id=event["source_run_id"], source_task_id="signal", source_map_index=-1)
                session.add(row)
                session.flush()
                dag_run.consumed_asset_events.append(row)
            dag_run.run_type = DagRunType(run_type)
            session.commit()
            return dag_run

        monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", as_scheduler_would)
        return run_dag(DAG_ID, LOGICAL, conf=conf())  # the defaults a scheduled or asset run gets

    return _run


def test_params_are_typed_and_described_for_the_trigger_form(dagbag):
    params = dagbag.get_dag(DAG_ID).params
    schema = {name: params.get_param(name).schema for name in params}
    assert schema["force"]["type"] == "boolean" and schema["dry_run"]["type"] == "boolean"
    assert schema["window_days"]["type"] == "integer" and schema["window_days"]["minimum"] == 1
    assert schema["window_start"] == {**schema["window_start"], "type": ["null", "string"], "format": "date"}
    assert schema["hyperparameters"]["type"] == "object"
    assert all(params.get_param(name).description for name in params)


def test_dry_run_records_the_decision_and_trains_nothing(run_dag, store, registry):
    run = run_dag(DAG_ID, LOGICAL, conf=conf(dry_run=True))

    assert states(run) == {"decide": "success", "train": "skipped", "register_candidate": "skipped"}
    payload = decision(store, run)
    assert (payload["retrain"], payload["reason"], payload["dry_run"]) == (True, "bootstrap", True)
    assert payload["window"] == DEFAULT_WINDOW
    assert payload["details"]["new_rows"] == 3200
    assert versions(registry) == []


def test_bootstrap_run_registers_a_candidate_with_lineage(run_dag, store, registry):
    run = run_dag(DAG_ID, LOGICAL, conf=conf())
    assert states(run) == {"decide": "success", "train": "success", "register_candidate": "success"}
    (version,) = versions(registry)
    tags = version.tags
    assert tags["evergreen.status"] == "candidate"
    assert (tags["evergreen.airflow_dag_id"], tags["evergreen.airflow_run_id"]) == (DAG_ID, run.run_id)
    assert tags["evergreen.training_window"] == DEFAULT_WINDOW
    assert tags["evergreen.kfp_run_id"] and tags["evergreen.data_fingerprint"]
    assert json.loads(tags["evergreen.hyperparameters"])["n_estimators"] == 20
    payload = decision(store, run)
    assert (payload["retrain"], payload["reason"]) == (True, "bootstrap")
    assert payload["outcome"]["candidate_version"] == str(version.version)
    assert payload["outcome"]["kfp_mode"] == "local"
    # the train task found the MLflow run the pipeline logged (by its Airflow lineage tags)
    assert train_result(run)["mlflow_run_id"] == version.run_id
    # the candidate Asset event carries the version (promote listens to it)
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extra = session.scalars(
            select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == "evergreen://churn/candidate", AssetEvent.source_run_id == run.run_id)
        ).one()
    assert (extra["version"], extra["backfill"]) == (str(version.version), False)
    assert extra["training_window"] == DEFAULT_WINDOW


def test_the_plan_and_the_lineage_name_no_folder_of_the_worker(isolated, registry):
    """What decide hands to train (an XCom, then the runner's arguments file or a cluster run's parameters) carries
    the model config as content and the lake as its URI, and the candidate's holdout is kept in the lake."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from evergreen.train.steps import holdout_uri, load_model_config

    (version,) = versions(registry)  # the bootstrap run's
    with create_session() as session:
        arguments = session.execute(XComModel.get_many(
            run_id=version.tags["evergreen.airflow_run_id"], dag_ids=DAG_ID, task_ids="decide", key="arguments",
        ).with_only_columns(XComModel.value)).scalar()
    assert "config_dir" not in arguments
    model = get_config().model("churn")
    loaded = load_model_config("churn", arguments["model_config"])
    assert loaded == dataclasses.replace(model, source=loaded.source)
    assert loaded.source == "include/config/churn.yaml"
    assert arguments["lake_root"] == str(isolated / "lake")
    tags = version.tags
    assert tags["evergreen.holdout_uri"] == holdout_uri("churn", tags["evergreen.data_fingerprint"], arguments["lake_root"])
    assert len(lake.read_parquet(tags["evergreen.holdout_uri"])) == int(tags["evergreen.holdout_rows"])


def _recent_retrain(store, key: str = "churn/seeded-recent-retrain"):
    from evergreen.store.base import Record

    now = dt.datetime.now(dt.timezone.utc)
    store.put_record(Record("retrain_decision", key, "churn", now - dt.timedelta(hours=2),
                            {"retrain": True, "dry_run": False, "reason": "manual"}))
    return key


def test_policy_refusal_is_recorded(run_dag, store, registry):
    _recent_retrain(store)
    before = len(versions(registry))
    run = run_dag(DAG_ID, LOGICAL, conf=conf())

    assert states(run) == {"decide": "success", "train": "skipped", "register_candidate": "skipped"}
    payload = decision(store, run)
    assert (payload["retrain"], payload["reason"]) == (False, policy.COOLDOWN)
    assert "inside cooldown_hours=24" in payload["message"]
    assert len(versions(registry)) == before


def test_backfill_originated_event_is_ignored(run_as, store, registry):
    before = len(versions(registry))
    run = run_as("asset_triggered", [{
        "uri": "evergreen://churn/drift", "source_dag_id": "monitor_drift_churn",
        "source_run_id": "backfill__2026-11-09T02:00:00+00:00",
        "extra": {"model": "churn", "day": "2026-11-08", "record_key": "churn/2026-11-08", "backfill": True},
    }])

    assert states(run) == {"decide": "success", "train": "skipped", "register_candidate": "skipped"}
    payload = decision(store, run)
    assert (payload["retrain"], payload["reason"]) == (False, policy.BACKFILL)
    assert payload["airflow"]["run_type"] == "asset_triggered"
    assert payload["details"]["signals"][0]["day"] == "2026-11-08"
    assert len(versions(registry)) == before


def test_genuine_drift_event_is_read_then_judged_by_the_policy(run_as, store):
    _recent_retrain(store)
    run = run_as("asset_triggered", [{
        "uri": "evergreen://churn/drift", "source_dag_id": "monitor_drift_churn",
        "source_run_id": "scheduled__2026-11-09T02:00:00+00:00",
        "extra": {"model": "churn", "day": "2026-11-08", "record_key": "churn/2026-11-08", "backfill": False},
    }])

    payload = decision(store, run)
    assert (payload["retrain"], payload["reason"]) == (False, policy.COOLDOWN)
    assert payload["message"].startswith("signal(s): drift on 2026-11-08; but the last retrain was")


@pytest.mark.parametrize(("hyperparameters", "message"), [
    ({**FAST, "max_depth": -3}, "hyper-parameter 'max_depth' (from the run's hyper-parameter overrides) rejected by "
                                "sklearn.ensemble.RandomForestClassifier"),
    ({**FAST, "n_trees": 5}, "hyper-parameter 'n_trees' (from the run's hyper-parameter overrides) is not accepted by "
                             "sklearn.ensemble.RandomForestClassifier; accepted: "),
])
def test_rejected_hyperparameter_fails_decide_before_any_pipeline(run_dag, store, registry, capfd, hyperparameters,
                                                                  message):
    """What the Param schema cannot express (the names and values this estimator accepts) fails decide, naming the
    parameter: no decision is recorded, the pipeline never starts, nothing is registered."""
    before = len(versions(registry))
    run = run_dag(DAG_ID, LOGICAL, conf=conf(force=True, hyperparameters=hyperparameters))

    ti = run.get_task_instance("decide")
    assert (ti.state, ti.try_number) == ("failed", 1)  # AirflowFailException: no retries of a bad request
    assert states(run) == {"decide": "failed", "train": "upstream_failed", "register_candidate": "upstream_failed"}
    log = "".join(capfd.readouterr())
    assert message in log
    assert "failed in task 'prepare'" not in log
    assert store.get_record("retrain_decision", f"churn/{run.run_id}") is None
    assert len(versions(registry)) == before


def test_window_without_data_fails_naming_the_window(run_dag, registry, capfd):
    before = len(versions(registry))
    run = run_dag(DAG_ID, LOGICAL, conf=conf(force=True, window_start="2026-09-01", window_end="2026-09-05"))

    assert run.get_task_instance("train").state == "failed"
    log = "".join(capfd.readouterr())
    assert ("failed in task 'prepare': evergreen.train.data.TrainingDataError: training window 2026-09-01/2026-09-05 "
            "of model 'churn': no labelled partitions") in log
    assert len(versions(registry)) == before


def test_reversed_window_param_fails_in_decide(run_dag, store, capfd):
    run = run_dag(DAG_ID, LOGICAL, conf=conf(window_start="2026-11-09", window_end="2026-11-02"))

    assert run.get_task_instance("decide").state == "failed"
    log = "".join(capfd.readouterr())
    assert "training window 2026-11-09/2026-11-02: window_start must be before window_end" in log
    assert store.get_record("retrain_decision", f"churn/{run.run_id}") is None


def test_registry_aliases_reach_the_policy(run_as, run_dag, store, registry):
    """After the bootstrap: a fresh champion makes the daily check a no; a challenger blocks even a forced run."""
    (first, *_) = versions(registry)
    registry.set_registered_model_alias("churn", "champion", first.version)
    try:
        daily = run_as("scheduled")
        payload = decision(store, daily)
        assert (payload["retrain"], payload["reason"]) == (False, policy.MODEL_FRESH)
        assert payload["details"]["champion_version"] == str(first.version)
        assert payload["details"]["champion_age_days"] < 1

        registry.set_registered_model_alias("churn", "challenger", first.version)
        forced = run_dag(DAG_ID, LOGICAL, conf=conf(force=True))
        assert states(forced)["train"] == "skipped"
        assert decision(store, forced)["reason"] == policy.AB_TEST_RUNNING
    finally:
        for alias in ("champion", "challenger"):
            registry.delete_registered_model_alias("churn", alias)


# --- bounded Params: the trigger-time schema, then decide for what a schema cannot express ------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("window_days", 0),
    ("window_days", 3651),
    ("window_days", "30"),
    ("window_start", "20261102"),
    ("window_start", "2026-11-31"),
    ("window_end", "next week"),
    ("hyperparameters", {"max_depth": {"__class__": "os.system"}}),
    ("hyperparameters", {"max_depth": [1, [2]]}),
    ("hyperparameters", {"max-depth": 3}),
    ("hyperparameters", "{\"max_depth\": 3}"),
    ("force", "false"),
])
def test_param_schema_refuses_an_unbounded_trigger_value(dagbag, name, value):
    from airflow.sdk.definitions.param import ParamValidationError

    param = copy.deepcopy(dagbag.get_dag(DAG_ID).params.get_param(name))  # resolve() keeps the value it is given
    with pytest.raises(ParamValidationError):
        param.resolve(value)


@pytest.mark.parametrize(("name", "value"), [
    ("window_days", 1),
    ("window_days", 3650),
    ("window_start", "2026-11-02"),
    ("window_start", None),
    ("hyperparameters", {"max_depth": 6, "class_weight": "balanced", "max_features": None, "bootstrap": True,
                         "min_impurity_decrease": 0.0}),
])
def test_param_schema_accepts_bounded_values(dagbag, name, value):
    param = copy.deepcopy(dagbag.get_dag(DAG_ID).params.get_param(name))
    assert param.resolve(value) == value


def test_window_days_bound_is_in_the_trigger_form(dagbag):
    schema = dagbag.get_dag(DAG_ID).params.get_param("window_days").schema
    assert (schema["minimum"], schema["maximum"]) == (1, 3650)


def test_bad_trigger_conf_is_refused_before_any_task_runs(run_dag, store):
    from airflow.sdk.definitions.param import ParamValidationError

    before = len(store.list_records("retrain_decision", "churn"))
    with pytest.raises(ParamValidationError, match="window_days"):
        run_dag(DAG_ID, LOGICAL, conf=conf(window_days=5000))
    with pytest.raises(ParamValidationError, match="hyperparameters"):
        run_dag(DAG_ID, LOGICAL, conf=conf(hyperparameters={"max_depth": {"nested": 1}}))
    assert len(store.list_records("retrain_decision", "churn")) == before


def test_window_longer_than_the_bound_fails_in_decide(run_dag, store, capfd):
    run = run_dag(DAG_ID, LOGICAL, conf=conf(window_start="2000-01-01", window_end="2026-11-10"))

    assert states(run)["decide"] == "failed"
    log = "".join(capfd.readouterr())
    assert "training window 2000-01-01/2026-11-10: 9810 days is longer than the maximum of 3650" in log
    assert store.get_record("retrain_decision", f"churn/{run.run_id}") is None
