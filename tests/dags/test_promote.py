"""promote_churn through Airflow's dag.test(): a first model promoted on its floors, a worse candidate rejected
with the champion unchanged, a backfill that never moves an alias, a re-run that is a no-op, a dry run.

Versions are trained in this process (``evergreen.train.steps.run_training``, the pipeline's own steps) on a
simulated lake, so each one carries the tags the gate needs (window, holdout URI, holdout metric). The module uses
its own store, MLflow database and lake.
"""

from __future__ import annotations

import datetime as dt
import json

import pendulum
import pytest

from dag_runs import run_as_backfill as run_backfill
from dag_runs import states, xcom
from evergreen import lake
from evergreen.config import get_config
from evergreen_demo import simulate

pytestmark = pytest.mark.slow

DAG_ID = "promote_churn"
LOGICAL = pendulum.datetime(2026, 11, 10, 6, tz="UTC")
GOOD = {"n_estimators": 20, "max_depth": 6}
WORSE = {"n_estimators": 1, "max_depth": 1}
NO_APPROVAL = {"gate": "success", "approve": "skipped", "apply": "success"}  # the policy asks for no person


def conf(**overrides) -> dict:
    return {"version": None, "dry_run": False, **overrides}


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("promote")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                  json.dumps({"conn_type": "mlflow", "extra": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        model = get_config().model("churn")
        for i in range(8):  # lake days 11-02..11-09, 700 labelled rows each (one holdout day >= min_holdout_rows)
            day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
            frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 700))
            lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1)))
        from airflow.models.pool import Pool

        Pool.create_or_update_pool("evergreen_registry", slots=1, description="registry moves",
                                   include_deferred=False)
        yield root


def train_version(root, start: str, end: str, hyperparameters: dict, run_id: str) -> str:
    """A registered candidate version trained on lake days [start, end) by the training pipeline's steps."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.train.data import Window
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import run_training

    hook = MlflowHook()
    target = MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")
    result = run_training(get_config().model("churn"), Window.parse(start, end), target,
                          holdout_path=root / f"holdout-{run_id}.parquet", lake_root=str(root / "lake"),
                          hyperparameters=hyperparameters, airflow_dag_id="test", airflow_run_id=run_id)
    assert result.registered is not None, f"{run_id}: holdout metric missed the sanity floor"
    return result.registered.version


@pytest.fixture
def registry():
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook().get_conn()


@pytest.fixture
def store():
    from evergreen.hooks.store import StoreHook

    return StoreHook().get_conn()


def champion(registry):
    from evergreen import tracking

    return tracking.aliases(registry, "churn").get("champion")


@pytest.fixture
def run_as_backfill(run_dag):
    return lambda **overrides: run_backfill(run_dag, DAG_ID, LOGICAL, conf(**overrides))


def test_first_model_promoted_on_its_floors_then_rerun_is_a_noop(isolated, run_dag, run_as_backfill, registry,
                                                                 store):
    from evergreen.promote import ledger

    v1 = train_version(isolated, "2026-11-02", "2026-11-06", GOOD, "v1")

    # a backfill gates but never moves an alias
    run = run_as_backfill(version=v1)
    assert states(run) == NO_APPROVAL
    assert xcom(run, "apply")["reason"] == "backfill"
    assert champion(registry) is None

    # a dry run neither tags, records nor moves
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v1, dry_run=True))
    assert xcom(run, "gate")["outcome"] == "promote" and xcom(run, "apply")["moved"] is False
    assert champion(registry) is None

    run = run_dag(DAG_ID, LOGICAL, conf=conf())  # no version named: the newest candidate
    assert states(run) == NO_APPROVAL
    gate = xcom(run, "gate")
    assert (gate["version"], gate["outcome"], gate["expected_champion"]) == (v1, "promote", None)
    assert xcom(run, "apply")["moved"] is True
    assert champion(registry) == v1
    tags = registry.get_model_version("churn", v1).tags
    assert tags["evergreen.status"] == "champion" and tags["evergreen.gate_outcome"] == "promote"
    assert tags["evergreen.gate_report"].endswith("gate/report.json")
    # the report is an artifact of the candidate's training run, as JSON, Markdown and HTML
    run_id = registry.get_model_version("churn", v1).run_id
    assert {f.path for f in registry.list_artifacts(run_id, "gate")} == {
        "gate/report.json", "gate/report.md", "gate/report.html", "gate/dry_run"}
    # the dry run's report is its own: it never replaces the one the tag and the ledger point at
    assert {f.path for f in registry.list_artifacts(run_id, "gate/dry_run")} == {
        "gate/dry_run/report.json", "gate/dry_run/report.md", "gate/dry_run/report.html"}
    local = registry.download_artifacts(run_id, "gate/report.json", str(isolated))
    report = json.loads(open(local).read())
    assert report["outcome"] == "promote"
    assert {c["name"]: c["verdict"] for c in report["checks"]}["floor:roc_auc"] == "pass"
    mine = sorted((e.event, e.alias or "", e.previous_version, e.new_version)
                  for e in ledger.entries(store, "churn") if e.actor.run_id == run.run_id)
    assert mine == [("alias_move", "champion", None, v1), ("gate", "", None, v1)]
    # the backfill and the dry run moved nothing
    assert [e.event for e in ledger.entries(store, "churn")].count("alias_move") == 1

    # re-running the promotion that already happened is a no-op that says so
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v1))
    assert xcom(run, "gate")["outcome"] == "noop"
    assert "already holds alias 'champion'" in xcom(run, "apply")["reason"]
    assert champion(registry) == v1
    assert [e.event for e in ledger.entries(store, "churn")].count("alias_move") == 1


def test_worse_candidate_is_rejected_and_the_champion_stays(isolated, run_dag, registry, store):
    from evergreen.promote import ledger

    v1 = champion(registry)
    assert v1 is not None, "runs after the first-model test"
    v2 = train_version(isolated, "2026-11-04", "2026-11-08", WORSE, "v2")
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v2))
    assert states(run) == NO_APPROVAL
    gate = xcom(run, "gate")
    assert (gate["outcome"], gate["expected_champion"]) == ("reject", v1), gate["reason"]
    assert xcom(run, "apply")["moved"] is False
    assert champion(registry) == v1
    assert registry.get_model_version("churn", v2).tags["evergreen.status"] == "rejected"
    (entry,) = [e for e in ledger.entries(store, "churn") if e.actor.run_id == run.run_id]
    assert (entry.event, entry.outcome, entry.previous_version, entry.new_version) == ("gate", "reject", v1, v2)


def policy_model(monkeypatch, **gate):
    """The churn model with gate fields overridden, as promote's task bodies see it."""
    import dataclasses

    from evergreen.promote import tasks

    base = get_config().model("churn")
    model = dataclasses.replace(base, gate=dataclasses.replace(base.gate, **gate))
    monkeypatch.setattr(tasks, "_model", lambda name: model)
    return model


def test_skip_approval_is_refused_unless_the_policy_allows_it(isolated, run_dag, registry, monkeypatch):
    """The Param exists only where gate.allow_skip_approval is true; a conf that sets it anyway is refused."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("promote_dag_file", Path(__file__).parents[2] / "dags/promote.py")
    promote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(promote)
    base = get_config().model("churn")
    assert "skip_approval" not in promote.params(base)
    import dataclasses

    allowed = dataclasses.replace(base, gate=dataclasses.replace(base.gate, allow_skip_approval=True))
    assert "skip_approval" in promote.params(allowed)

    before = champion(registry)
    v3 = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "v3")
    policy_model(monkeypatch, approval="always", margin=0.5, ab_test_when="never")
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v3, skip_approval=True))
    assert states(run)["gate"] == "failed"
    assert champion(registry) == before


def test_skip_approval_where_allowed_moves_and_is_in_the_ledger(isolated, run_dag, registry, store, monkeypatch):
    from evergreen.promote import ledger

    v4 = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "v4")
    policy_model(monkeypatch, approval="always", allow_skip_approval=True, margin=0.5, ab_test_when="never")
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v4, skip_approval=True))
    assert states(run) == NO_APPROVAL
    assert xcom(run, "gate")["approval_required"] is True
    assert champion(registry) == v4
    mine = {e.event: e for e in ledger.entries(store, "churn") if e.actor.run_id == run.run_id}
    assert set(mine) == {"gate", "approval", "alias_move"}
    assert mine["approval"].outcome == "skipped" and "skip_approval" in mine["approval"].reason


def test_an_approval_the_policy_asks_for_is_never_bypassed_by_apply(isolated, run_dag, registry, monkeypatch):
    """Without an Approve answer in the approve task's XCom, apply refuses: marking approve done by hand (here: the
    operator's wait replaced by a return without an answer) cannot move an alias."""
    from evergreen.operators.approval import GateApprovalOperator

    before = champion(registry)
    v5 = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "v5")
    policy_model(monkeypatch, approval="always", margin=0.5, ab_test_when="never")
    monkeypatch.setattr(GateApprovalOperator.__mro__[1], "execute", lambda self, context: None)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=v5))
    assert states(run) == {"gate": "success", "approve": "success", "apply": "failed"}
    assert champion(registry) == before


def test_no_promotion_moves_an_alias_while_an_ab_test_runs(isolated, run_dag, registry, monkeypatch):
    """With a challenger in place, a passing candidate is gated and recorded, but apply refuses to start a second
    test or move champion under the running one: the running test keeps the arms it started with."""
    from evergreen import tracking

    before = champion(registry)
    running = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "running")
    new = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "new")
    registry.set_registered_model_alias("churn", "challenger", running)
    try:
        policy_model(monkeypatch, margin=0.5, ab_test_when="never")
        run = run_dag(DAG_ID, LOGICAL, conf=conf(version=new))
        assert xcom(run, "gate")["outcome"] == "promote"
        assert states(run)["apply"] == "failed"
        assert tracking.aliases(registry, "churn") == {"champion": before, "challenger": running}
    finally:
        registry.delete_registered_model_alias("churn", "challenger")
