"""rollback_churn through Airflow's dag.test(): champion back to the ledger's previous champion (recorded, alerted),
and a target that never was champion refused with nothing moved. Own store, MLflow database and lake."""

from __future__ import annotations

import datetime as dt
import json

import pendulum
import pytest

from dag_runs import states
from evergreen import lake, tracking
from evergreen.config import get_config
from evergreen_demo import simulate

pytestmark = pytest.mark.slow

DAG_ID = "rollback_churn"
LOGICAL = pendulum.datetime(2026, 11, 12, tz="UTC")
FAST = {"n_estimators": 5, "max_depth": 4}


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("rollback")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                  json.dumps({"conn_type": "mlflow", "extra": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        model = get_config().model("churn")
        for i in range(4):
            day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
            frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 300))
            lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1)))
        from airflow.models.pool import Pool

        Pool.create_or_update_pool("evergreen_registry", slots=1, description="registry moves",
                                   include_deferred=False)
        yield root


@pytest.fixture(scope="module")
def versions(isolated):
    """Three versions; 1 then 2 made champion by recorded moves (as promote_churn records them), 3 never."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry
    from evergreen.train.data import Window
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import run_training

    hook = MlflowHook()
    target = MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")
    made = []
    for i in range(3):
        result = run_training(get_config().model("churn"), Window.parse("2026-11-02", "2026-11-06"), target,
                              holdout_path=isolated / f"holdout-{i}.parquet", lake_root=str(isolated / "lake"),
                              hyperparameters=FAST, airflow_dag_id="test", airflow_run_id=f"seed-{i}")
        made.append(result.registered.version)
    client, store = hook.get_conn(), StoreHook().get_conn()
    previous = None
    for i, version in enumerate(made[:2]):
        registry.move_alias(client, "churn", "champion", version, previous)
        ledger.append(store, ledger.LedgerEntry(
            model="churn", event=ledger.ALIAS_MOVE, ts=dt.datetime(2026, 11, 10 + i, tzinfo=dt.timezone.utc),
            actor=ledger.Actor(dag_id="promote_churn", run_id=f"seed-{i}", task_id="apply"), alias="champion",
            previous_version=previous, new_version=version, outcome="promote"))
        previous = version
    return made


def champion():
    from evergreen.hooks.mlflow import MlflowHook

    return tracking.aliases(MlflowHook().get_conn(), "churn").get("champion")


def test_a_target_that_never_was_champion_is_refused(run_dag, versions):
    assert champion() == versions[1]
    run = run_dag(DAG_ID, LOGICAL, conf={"version": versions[2]})
    assert states(run) == {"rollback_champion": "failed"}
    assert champion() == versions[1]


def test_rollback_returns_to_the_previous_champion_records_and_alerts(run_dag, versions):
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger

    v1, v2, _ = versions
    run = run_dag(DAG_ID, LOGICAL, conf={"version": None})
    assert states(run) == {"rollback_champion": "success"}
    assert champion() == v1
    client = MlflowHook().get_conn()
    assert client.get_model_version("churn", v1).tags["evergreen.status"] == "champion"
    assert client.get_model_version("churn", v2).tags["evergreen.status"] == "retired"
    store = StoreHook().get_conn()
    (entry,) = [e for e in ledger.entries(store, "churn") if e.event == ledger.ROLLBACK]
    assert (entry.alias, entry.previous_version, entry.new_version, entry.actor.run_id) == (
        "champion", v2, v1, run.run_id)
    alerts = [r for r in store.list_records("alert", "churn") if "/rollback/" in r.key]
    assert len(alerts) == 1, [r.key for r in store.list_records("alert", "churn")]


def test_a_rollback_during_an_ab_test_ends_the_test(run_dag, versions):
    """The test's champion arm changes with the rollback, so the test cannot go on: the challenger alias goes
    (the version tagged retired) and the ledger says why; without this the A/B analysis would mix two champions."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry

    v1, v2, v3 = versions
    client, store = MlflowHook().get_conn(), StoreHook().get_conn()
    current = champion()  # v1 after the rollback above, v2 when this test runs alone
    target = v2 if current == v1 else v1
    registry.move_alias(client, "churn", "challenger", v3, None)
    ledger.append(store, ledger.LedgerEntry(
        model="churn", event=ledger.AB_START, ts=dt.datetime(2026, 11, 13, tzinfo=dt.timezone.utc),
        actor=ledger.Actor(dag_id="promote_churn", run_id="seed-ab", task_id="apply"), alias="challenger",
        new_version=v3, outcome="ab_test"))
    run = run_dag(DAG_ID, LOGICAL.add(days=1), conf={"version": target})  # back to a former champion, by name
    assert states(run) == {"rollback_champion": "success"}
    aliases = tracking.aliases(client, "churn")
    assert aliases.get("champion") == target and "challenger" not in aliases
    assert client.get_model_version("churn", v3).tags["evergreen.status"] == "retired"
    mine = [e for e in ledger.entries(store, "churn") if e.actor.run_id == run.run_id]
    assert [(e.event, e.alias, e.previous_version, e.new_version) for e in mine] == [
        ("rollback", "champion", current, target), ("alias_move", "challenger", v3, None),
        ("ab_stop", "challenger", v3, None)]
    assert "the test's champion arm changed" in mine[-1].reason


def test_a_retry_of_a_rollback_that_failed_before_ending_the_test_ends_it(versions):
    """The try that moved champion (and recorded it) failed before it removed the challenger: the retry does not
    roll back again (that would go one version further) but still ends the test."""
    from types import SimpleNamespace

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry
    from evergreen.promote.tasks import rollback_run

    _, _, v3 = versions
    client, store = MlflowHook().get_conn(), StoreHook().get_conn()
    current = champion()
    ti = SimpleNamespace(dag_id=DAG_ID, run_id="retry-run", task_id="rollback_champion", map_index=-1, try_number=2)
    ledger.append(store, ledger.LedgerEntry(  # what the first try recorded before it failed
        model="churn", event=ledger.ROLLBACK, ts=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc),
        actor=ledger.Actor(dag_id=DAG_ID, run_id="retry-run", task_id="rollback_champion"), alias="champion",
        previous_version="9", new_version=current, reason="rollback of champion from version 9"))
    registry.move_alias(client, "churn", "challenger", v3, None)
    context = {"ti": ti, "dag_run": SimpleNamespace(dag_id=DAG_ID, run_id="retry-run", run_type="manual",
                                                   run_after=dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)),
               "params": {"version": None}}
    out = rollback_run("churn", context)
    assert out == {"model": "churn", "version": current, "previous": "9", "moved": False}
    assert champion() == current and "challenger" not in tracking.aliases(client, "churn")
    mine = [e.event for e in ledger.entries(store, "churn") if e.actor.run_id == "retry-run"]
    assert mine == ["rollback", "alias_move", "ab_stop"]
    assert rollback_run("churn", context)["moved"] is False  # a third try changes nothing more
    assert [e.event for e in ledger.entries(store, "churn") if e.actor.run_id == "retry-run"] == mine
