"""evaluate_performance_churn through Airflow's dag.test(): records, MLflow runs, the decay signal and its alert.

Real parts: the session's Airflow metadata DB, the embedded store, MLflow's SQLite tracking + registry (a tiny
LogisticRegression registered as the champion, its training run carrying holdout_roc_auc and its CI). Days are in
March 2027 so they cannot collide with other test modules that share the session's store and registry.
"""

from __future__ import annotations

import datetime as dt

import pytest

from evergreen.config import get_config

pytestmark = pytest.mark.slow

DAG_ID = "evaluate_performance_churn"
HEALTHY, DECAYED, NO_LABELS, ONE_CLASS, NULL_SCORES, EMPTY = (dt.date(2027, 3, d) for d in (2, 4, 6, 8, 10, 12))
LATE = dt.date(2027, 3, 14)  # predictions and outcomes in the store, but its last landing days not ingested
DELAY = get_config().model("churn").performance.label_delay_days  # 30: churn is defined over 30 days
#: landing days with an ingestion record: every day the labels of HEALTHY .. EMPTY land on, not LATE's last two
INGESTED = [HEALTHY + dt.timedelta(days=i) for i in range((EMPTY - HEALTHY).days + DELAY + 1)]
NOT_INGESTED = [LATE + dt.timedelta(days=DELAY - 1), LATE + dt.timedelta(days=DELAY)]


def logical(prediction_day: dt.date) -> str:
    """The logical date of the run that evaluates ``prediction_day`` (window_days=1): the run covering day
    P+label_delay_days runs the day after; noon is after the 03:00 tick, so its data interval is
    [P+delay, P+delay+1)."""
    return f"{prediction_day + dt.timedelta(days=DELAY + 1)}T12:00:00+00:00"


def put_ingestion_records(store, model_name: str, days) -> None:
    """What ingest_feedback records once a landing day is in (only its existence counts for maturity)."""
    from evergreen.ingest.tasks import RECORD_KIND
    from evergreen.store.base import Record

    for day in days:
        store.put_record(Record(RECORD_KIND, f"{model_name}/{day.isoformat()}", model_name,
                                dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc),
                                {"rows_read": 0, "landed": 0, "quarantined": 0, "files": []}))


def register_champion(model, hook, baseline_day: dt.date, training_window: str) -> tuple[str, dict[str, float]]:
    """A tiny LogisticRegression registered as the champion; its run logs the holdout AUC of a healthy day."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from evergreen.stats import auc_delong
    from evergreen_demo.simulate import simulate_day

    holdout = simulate_day(model, baseline_day, 5000)
    est = auc_delong(holdout.outcomes[model.label.name].to_numpy(), holdout.predictions["score"].to_numpy())
    metrics = {"holdout_roc_auc": est.value, "holdout_roc_auc_ci_low": est.low, "holdout_roc_auc_ci_high": est.high}
    client = hook.get_conn()
    experiment = hook.experiment_id(f"evergreen/{model.name}/training")
    mlflow.set_tracking_uri(hook.tracking_uri)
    mlflow.set_registry_uri(hook.registry_uri)
    x = holdout.predictions[["tenure_months", "monthly_charges"]].to_numpy(dtype="float64")
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(LogisticRegression().fit(x, holdout.outcomes[model.label.name]), name="model",
                                        registered_model_name=model.name, pip_requirements=["scikit-learn"])
        mlflow.log_metrics(metrics)
    version = str(info.registered_model_version)
    for k, v in {"evergreen.status": "champion", "evergreen.training_window": training_window}.items():
        client.set_model_version_tag(model.name, version, k, v)
    client.set_registered_model_alias(model.name, "champion", version)
    return version, metrics


@pytest.fixture(scope="module")
def champion(airflow_db, model, mlflow_hook, store):
    from evergreen_demo.simulate import simulate_day

    version, metrics = register_champion(model, mlflow_hook, dt.date(2027, 2, 20), "2027-02-01/2027-02-08")

    def land(day, n=2500, with_outcomes=True, **kw):
        d = simulate_day(model, day, n, model_version=version, **kw)
        store.upsert_predictions(model.name, d.predictions, model.feature_names)
        if with_outcomes:
            store.upsert_outcomes(model.name, d.outcomes.rename(columns={model.label.name: "label"}))
        return d

    healthy = land(HEALTHY)
    # a quarter of the healthy day is an A/B challenger arm served by an unregistered version
    ch = healthy.predictions.iloc[::4].assign(model_version="ab-test-2", arm="challenger")
    store.upsert_predictions(model.name, ch, model.feature_names)
    land(DECAYED, score_noise=0.7)
    land(NO_LABELS, with_outcomes=False)
    one = land(ONE_CLASS, with_outcomes=False)
    store.upsert_outcomes(model.name, one.outcomes.rename(columns={model.label.name: "label"}).assign(label=1))
    nulls = simulate_day(model, NULL_SCORES, 2500, model_version=version)
    store.upsert_predictions(model.name, nulls.predictions.assign(score=None), model.feature_names)
    store.upsert_outcomes(model.name, nulls.outcomes.rename(columns={model.label.name: "label"}))
    land(LATE)
    put_ingestion_records(store, model.name, INGESTED)
    return {"version": version, "metrics": metrics}


def record(store, day):
    return store.get_record("performance", f"churn/{day.isoformat()}")


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def asset_events(run_id: str):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(e.asset.name, dict(e.extra or {})) for e in session.query(AssetEvent).filter(
            AssetEvent.source_dag_id == DAG_ID, AssetEvent.source_run_id == run_id)]


def monitoring_runs(hook, day):
    client = hook.get_conn()
    exp = client.get_experiment_by_name("evergreen/churn/monitoring")
    return client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`evergreen.monitoring_key` = 'performance/churn/{day.isoformat()}'")


def test_dag_is_daily_backfillable_and_wires_the_decay_asset(dagbag):
    dag = dagbag.get_dag(DAG_ID)
    assert dag is not None, dagbag.import_errors
    assert dag.timetable.expression == "0 3 * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert all(t.retries >= 2 for t in dag.tasks)
    signal = dag.task_dict["signal_decay"]
    assert [a.name for a in signal.outlets] == ["evergreen_churn_decay"]
    assert dag.task_dict["evaluate"].on_failure_callback, "failures must alert"


def test_healthy_window_is_recorded_ok_and_does_not_signal(run_dag, champion, store, mlflow_hook):
    dr = run_dag(DAG_ID, logical(HEALTHY))
    assert states(dr) == {"evaluate": "success", "signal_decay": "skipped"}
    rec = record(store, HEALTHY)
    assert rec.payload["status"] == "ok", rec.payload["reason"]
    assert rec.payload["window"] == {"start": "2027-03-02", "end": "2027-03-03"}
    assert rec.payload["interval"] == {"start": "2027-04-01", "end": "2027-04-02"}  # 30 days later
    assert rec.payload["labels"] == {
        "mature": True, "label_delay_days": 30, "landing_days": ["2027-03-02", "2027-04-01"], "n_landing_days": 31,
        "n_ingested": 31, "missing": [], "failed": [], "unreadable_files_on": []}
    assert rec.payload["champion"]["baseline"]["value"] == pytest.approx(champion["metrics"]["holdout_roc_auc"])
    groups = {(g["by"], g["value"]): g for g in rec.payload["groups"]}
    assert groups[("arm", "challenger")]["n_predictions"] == 625
    assert groups[("version", "ab-test-2")]["status"] == "no_baseline"  # unregistered version: measured only
    assert asset_events(dr.run_id) == []
    assert store.get_record("alert", "churn/2027-03-02/decay") is None
    (run,) = monitoring_runs(mlflow_hook, HEALTHY)
    assert run.data.metrics["champion_roc_auc"] == pytest.approx(rec.payload["champion"]["estimate"]["value"])
    assert run.data.tags["evergreen.status"] == "ok"


def test_decay_is_recorded_signalled_once_and_alerted_with_numbers_links_and_rerun(run_dag, champion, store,
                                                                                    mlflow_hook):
    dr = run_dag(DAG_ID, logical(DECAYED))
    assert states(dr) == {"evaluate": "success", "signal_decay": "success"}
    rec = record(store, DECAYED)
    assert rec.payload["status"] == "decay" and rec.payload["backfill"] is False
    champ = rec.payload["champion"]
    assert champ["difference_ci_high"] < -rec.payload["tolerance"]

    ((asset, extra),) = asset_events(dr.run_id)
    assert asset == "evergreen_churn_decay"
    assert extra["backfill"] is False and extra["record_key"] == "churn/2027-03-04" and extra["day"] == "2027-03-04"

    alert = store.get_record("alert", "churn/2027-03-04/decay")
    assert alert is not None
    p = alert.payload
    assert p["numbers"]["live"] == pytest.approx(champ["estimate"]["value"])
    assert p["numbers"]["baseline"] == pytest.approx(champion["metrics"]["holdout_roc_auc"])
    assert p["window"] == {"start": "2027-03-04", "end": "2027-03-05"}
    assert p["links"]["airflow_run"].startswith("http://localhost:8080/dags/evaluate_performance_churn/runs/")
    assert p["rerun"]["dag_id"] == "retrain_churn" and p["rerun"]["conf"] == {"force": True}
    assert p["deliveries"]["log"]["status"] == "sent"
    run_ids = {r.info.run_id for r in monitoring_runs(mlflow_hook, DECAYED)}
    assert p["numbers"]["record"] == "performance:churn/2027-03-04" and len(run_ids) == 1

    # A re-run of the interval replaces the record and reuses the MLflow run (same data: same revision).
    again = run_dag(DAG_ID, logical(DECAYED))
    assert states(again)["evaluate"] == "success"
    recs = [r for r in store.list_records("performance", "churn") if r.key == "churn/2027-03-04"]
    assert len(recs) == 1 and recs[0].payload["champion"] == champ
    runs = monitoring_runs(mlflow_hook, DECAYED)
    assert {r.info.run_id for r in runs} == run_ids
    assert runs[0].data.tags["evergreen.revision"] == "1"
    history = mlflow_hook.get_conn().get_metric_history(runs[0].info.run_id, "champion_roc_auc")
    assert len(history) == 1
    assert len([r for r in store.list_records("alert", "churn") if r.key.startswith("churn/2027-03-04/")]) == 1


@pytest.mark.parametrize(
    ("day", "status", "reason"),
    [
        (NO_LABELS, "too_small", "0 usable labelled rows of 2500"),
        (ONE_CLASS, "cannot_judge", "every one of the 2500 labels is 1"),
        (NULL_SCORES, "cannot_judge", "column 'score' is null in every one of the 2500 predictions"),
        (EMPTY, "cannot_judge", "empty window"),
    ],
)
def test_windows_that_cannot_be_judged_are_recorded_with_the_reason(run_dag, champion, store, day, status, reason):
    dr = run_dag(DAG_ID, logical(day))
    assert states(dr) == {"evaluate": "success", "signal_decay": "skipped"}
    rec = record(store, day)
    assert rec.payload["status"] == status and rec.payload["judged"] is False and rec.payload["decay"] is False
    assert reason in rec.payload["reason"]
    assert asset_events(dr.run_id) == []


def test_no_champion_is_recorded_as_cannot_judge(run_dag, champion, store, mlflow_hook):
    client = mlflow_hook.get_conn()
    client.delete_registered_model_alias("churn", "champion")
    try:
        dr = run_dag(DAG_ID, logical(HEALTHY))
    finally:
        client.set_registered_model_alias("churn", "champion", champion["version"])
    assert states(dr) == {"evaluate": "success", "signal_decay": "skipped"}
    rec = record(store, HEALTHY)
    assert rec.payload["status"] == "cannot_judge" and rec.payload["reason"].startswith("no champion")
    assert rec.payload["groups"], "the window's facts are still recorded"
    # and back with the champion, the same interval is judged again (the record is replaced)
    run_dag(DAG_ID, logical(HEALTHY))
    assert record(store, HEALTHY).payload["status"] == "ok"


def test_a_window_whose_labels_have_not_all_been_ingested_is_recorded_immature_naming_the_days(run_dag, champion,
                                                                                               store):
    """LATE's outcomes are already in the store, but ingest_feedback has not recorded its last two landing days: the
    calendar says the labels are due, the ingestion records say they are not all in."""
    dr = run_dag(DAG_ID, logical(LATE))
    assert states(dr) == {"evaluate": "success", "signal_decay": "skipped"}
    p = record(store, LATE).payload
    assert p["status"] == "immature" and p["judged"] is False and p["groups"] == []
    assert p["labels"]["missing"] == [d.isoformat() for d in NOT_INGESTED]
    assert f"no ingestion record for 2 day(s): {NOT_INGESTED[0]} .. {NOT_INGESTED[1]}" in p["reason"]
    assert "run ingest_feedback_churn for those days, then re-run this interval" in p["reason"]
    # once they are ingested, a re-run of the same interval judges the window (the record is replaced)
    put_ingestion_records(store, "churn", NOT_INGESTED)
    run_dag(DAG_ID, logical(LATE))
    assert record(store, LATE).payload["status"] == "ok"
