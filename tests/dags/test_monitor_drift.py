"""monitor_drift_churn through Airflow: reference built once per champion version, drift records, the Evidently
report in MLflow, the drift signal and its alert, bad input; and a real backfill through `airflow backfill create`
and a scheduler for both monitoring DAGs.

Days are in April 2027 (dag.test) so they cannot collide with other test modules sharing the session's store,
lake and registry; the backfill test runs in its own EVERGREEN_HOME and Airflow home.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from airflow_stack import airflow, free_port, stack_env, start, stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "monitor_drift_churn"
TRAINING = (dt.date(2027, 4, 1), dt.date(2027, 4, 4))
SAME, DRIFTED, MISSING, WRONG_TYPE, EMPTY = (dt.date(2027, 4, d) for d in (10, 12, 14, 16, 18))


def logical(day: dt.date) -> str:
    """The logical date of the run covering ``day``: noon of the next day is after the 02:00 tick."""
    return f"{day + dt.timedelta(days=1)}T12:00:00+00:00"


def write_labelled_partitions(model, days, n=1500):
    """The lake partitions ingest_feedback writes (columns of the shared decision), from simulated traffic."""
    from evergreen import lake
    from evergreen_demo.simulate import simulate_day

    for day in days:
        d = simulate_day(model, day, n)
        p = d.predictions
        frame = p[["request_id", "entity_id", "ts"]].assign(
            outcome_ts=d.outcomes["ts"], label=d.outcomes[model.label.name], model_version=p["model_version"],
            arm=p["arm"], source="logged")
        frame = frame.join(p[model.feature_names])
        lake.write_parquet_atomic(frame, lake.labelled_path(model.name, day))


def register_champion(model, hook, training: tuple[dt.date, dt.date]) -> str:
    """A tiny LogisticRegression as the champion, tagged with its training window (the reference is built from it)."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from evergreen_demo.simulate import simulate_day

    d = simulate_day(model, training[0], 500)
    x = d.predictions[["tenure_months", "monthly_charges"]].to_numpy(dtype="float64")
    client = hook.get_conn()
    mlflow.set_tracking_uri(hook.tracking_uri)
    mlflow.set_registry_uri(hook.registry_uri)
    with mlflow.start_run(experiment_id=hook.experiment_id(f"evergreen/{model.name}/training")):
        info = mlflow.sklearn.log_model(LogisticRegression().fit(x, d.outcomes[model.label.name]), name="model",
                                        registered_model_name=model.name, pip_requirements=["scikit-learn"])
        mlflow.log_metrics({"holdout_roc_auc": 0.79, "holdout_roc_auc_ci_low": 0.77, "holdout_roc_auc_ci_high": 0.81})
    version = str(info.registered_model_version)
    window = f"{training[0].isoformat()}/{training[1].isoformat()}"
    client.set_model_version_tag(model.name, version, "evergreen.training_window", window)
    client.set_model_version_tag(model.name, version, "evergreen.status", "champion")
    client.set_registered_model_alias(model.name, "champion", version)
    return version


@pytest.fixture(scope="module")
def champion(airflow_db, model, mlflow_hook, store):
    from evergreen_demo.simulate import simulate_day

    day = TRAINING[0]
    days = []
    while day < TRAINING[1]:
        days.append(day)
        day += dt.timedelta(days=1)
    write_labelled_partitions(model, days)
    version = register_champion(model, mlflow_hook, TRAINING)

    def log_predictions(day, n=3000, features=None, **kw):
        d = simulate_day(model, day, n, model_version=version, **kw)
        store.upsert_predictions(model.name, d.predictions, features or model.feature_names)
        return d

    log_predictions(SAME)
    log_predictions(DRIFTED, n=6000, drift=1.5)  # more rows than report_sample_size (5000)
    log_predictions(MISSING, features=[f for f in model.feature_names if f not in ("tenure_months", "plan")])
    d = simulate_day(model, WRONG_TYPE, 3000, model_version=version)
    bad = d.predictions.assign(tenure_months="twelve", monthly_charges=None)
    store.upsert_predictions(model.name, bad, model.feature_names)
    return version


def record(store, day):
    return store.get_record("drift", f"churn/{day.isoformat()}")


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def asset_events(run_id: str):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(e.asset.name, dict(e.extra or {})) for e in session.query(AssetEvent).filter(
            AssetEvent.source_dag_id == DAG_ID, AssetEvent.source_run_id == run_id)]


def monitoring_run(hook, day):
    client = hook.get_conn()
    exp = client.get_experiment_by_name("evergreen/churn/monitoring")
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`evergreen.monitoring_key` = 'drift/churn/{day.isoformat()}'")
    assert len(runs) == 1, f"expected one monitoring run for {day}, found {len(runs)}"
    return runs[0]


def test_dag_is_daily_backfillable_and_wires_the_drift_asset(dagbag):
    dag = dagbag.get_dag(DAG_ID)
    assert dag is not None, dagbag.import_errors
    assert dag.timetable.expression == "0 2 * * *"
    assert dag.catchup is False
    assert all(t.retries >= 2 for t in dag.tasks)
    assert [a.name for a in dag.task_dict["signal_drift"].outlets] == ["evergreen_churn_drift"]


def test_no_drift_builds_the_reference_once_and_logs_scores_and_report(run_dag, champion, model, store, mlflow_hook):
    from evergreen import lake
    from evergreen.monitor.reference import load_reference

    uri = lake.reference_dir("churn", champion)
    assert not lake.exists(f"{uri}/stats.json")
    dr = run_dag(DAG_ID, logical(SAME))
    assert states(dr) == {"detect": "success", "signal_drift": "skipped"}
    rec = record(store, SAME)
    p = rec.payload
    assert p["status"] == "ok" and p["dataset_drift"] is False, p["reason"]
    assert p["reference"]["built_now"] is True and p["reference"]["version"] == champion
    assert p["reference"]["n_rows"] == 3 * 1500  # the three labelled partitions of the training window
    # a version registered without a reference (by hand here, or before references were built at registration):
    # the one explicit rebuild from the lake window, recorded as such
    assert p["reference"]["source"] == "lake_window" and p["reference"]["fingerprint_checked"] is False
    ref_record = store.get_record("reference", f"churn/version={champion}")
    assert ref_record.payload["training_window"] == ["2027-04-01", "2027-04-04"]
    assert ref_record.payload["source"] == "lake_window" and ref_record.payload["fingerprint_checked"] is False
    assert load_reference(uri).n_rows == 4500
    assert {f["feature"] for f in p["features"]} == set(model.feature_names)
    assert all(f["method"] and f["threshold"] is not None for f in p["features"])

    run = monitoring_run(mlflow_hook, SAME)
    for f in p["features"]:
        assert run.data.metrics[f"drift_score.{f['feature']}"] == pytest.approx(f["score"])
        assert run.data.tags[f"evergreen.method.{f['feature']}"].startswith(f["method"])
    assert run.data.metrics["report.current_sample"] == 3000
    html = Path(mlflow_hook.get_conn().download_artifacts(run.info.run_id, "drift_report.html")).read_text()
    assert "Evidently ran on a deterministic sample of 3000 of 3000 current rows" in html
    assert asset_events(dr.run_id) == []

    again = run_dag(DAG_ID, logical(SAME))  # the second run loads the reference instead of rebuilding it
    assert states(again)["detect"] == "success"
    assert record(store, SAME).payload["reference"]["built_now"] is False
    assert monitoring_run(mlflow_hook, SAME).info.run_id == run.info.run_id


def test_drift_is_recorded_signalled_and_alerted_with_a_bounded_report(run_dag, champion, store, mlflow_hook):
    dr = run_dag(DAG_ID, logical(DRIFTED))
    assert states(dr) == {"detect": "success", "signal_drift": "success"}
    p = record(store, DRIFTED).payload
    assert p["status"] == "ok" and p["dataset_drift"] is True
    assert p["drifted_share"] >= p["drift_share_threshold"]
    assert p["report"] == {"current_sample": 5000, "current_rows": 6000, "reference_sample": 4500,
                           "reference_rows": 4500}
    ((asset, extra),) = asset_events(dr.run_id)
    assert asset == "evergreen_churn_drift"
    assert extra == {**extra, "backfill": False, "model": "churn", "day": "2027-04-12", "record_key": "churn/2027-04-12"}

    alert = store.get_record("alert", "churn/2027-04-12/drift").payload
    assert alert["summary"].startswith(f"dataset drift: {len(p['drifted_features'])} of 7 judged features drifted")
    assert set(alert["numbers"]["drifted_features"]) == set(p["drifted_features"])
    for name, score in alert["numbers"]["scores"].items():
        feature = next(f for f in p["features"] if f["feature"] == name)
        assert score == {"method": feature["method"], "score": feature["score"], "threshold": feature["threshold"]}
    assert "/dags/monitor_drift_churn/runs/" in alert["links"]["airflow_run"]
    assert alert["rerun"]["dag_id"] == "retrain_churn"

    run = monitoring_run(mlflow_hook, DRIFTED)
    html = Path(mlflow_hook.get_conn().download_artifacts(run.info.run_id, "drift_report.html")).read_text()
    assert "deterministic sample of 5000 of 6000 current rows" in html


@pytest.mark.parametrize(
    ("day", "status", "reasons"),
    [
        (MISSING, "ok", {"tenure_months": "missing from the current window",
                                   "plan": "missing from the current window"}),
        (WRONG_TYPE, "ok", {"tenure_months": "wrong type", "monthly_charges": "are null"}),
        (EMPTY, "cannot_judge", {}),
    ],
)
def test_bad_windows_are_recorded_with_reasons_not_crashes(run_dag, champion, store, day, status, reasons):
    dr = run_dag(DAG_ID, logical(day))
    assert states(dr) == {"detect": "success", "signal_drift": "skipped"}
    p = record(store, day).payload
    assert p["status"] == status, p["reason"]
    by_name = {f["feature"]: f for f in p["features"]}
    for name, reason in reasons.items():
        assert by_name[name]["status"] == "cannot_judge" and reason in by_name[name]["reason"]
        assert by_name[name]["drifted"] is None
    if day == EMPTY:
        assert p["status"] == "cannot_judge" and "empty" in p["reason"]
    if p["status"] == "ok":  # a verdict despite unjudged features only when they could not change it
        assert p["dataset_drift"] is False and "could not be judged" in p["reason"]
    else:
        assert p["dataset_drift"] is None


def test_no_champion_is_recorded_as_cannot_judge(run_dag, champion, store, mlflow_hook):
    client = mlflow_hook.get_conn()
    client.delete_registered_model_alias("churn", "champion")
    try:
        dr = run_dag(DAG_ID, logical(SAME))
    finally:
        client.set_registered_model_alias("churn", "champion", champion)
    assert states(dr) == {"detect": "success", "signal_drift": "skipped"}
    p = record(store, SAME).payload
    assert p["status"] == "cannot_judge" and p["reason"].startswith("no champion")
    run_dag(DAG_ID, logical(SAME))
    assert record(store, SAME).payload["status"] == "ok"  # re-run with a champion replaces the record


def test_the_reference_saved_at_registration_is_used_and_a_fingerprint_mismatch_cannot_be_judged(
        run_dag, champion, model, store, mlflow_hook):
    """A champion registered the pipeline's way: its reference built from its training rows at register, with the
    data fingerprint. Drift is judged against exactly that; a fingerprint that does not match is "cannot judge"."""
    from evergreen import lake
    from evergreen.train.data import fingerprint
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import save_version_reference
    from evergreen_demo.simulate import simulate_day

    day = dt.date(2027, 4, 20)
    d = simulate_day(model, day, 3000, model_version=champion)
    store.upsert_predictions(model.name, d.predictions, model.feature_names)
    client = mlflow_hook.get_conn()
    version = register_champion(model, mlflow_hook, TRAINING)  # a new version, now the champion
    rows, _ = lake.read_partitions(model.name, "labelled", *TRAINING)
    train_rows = rows.iloc[::2][[*model.feature_names, "label"]].reset_index(drop=True)  # "the training split"
    trained_on = fingerprint(rows[["request_id", "label", *model.feature_names]])
    client.set_model_version_tag(model.name, version, "evergreen.data_fingerprint", trained_on)
    try:
        uri = save_version_reference(model, train_rows, version, trained_on,
                                     MlflowTarget(mlflow_hook.tracking_uri, mlflow_hook.registry_uri or ""))
        assert uri == lake.reference_dir(model.name, version)
        assert client.get_model_version(model.name, version).tags["evergreen.reference_uri"] == uri

        run_dag(DAG_ID, logical(day))
        p = record(store, day).payload
        assert p["status"] == "ok", p["reason"]
        assert p["reference"] == {**p["reference"], "version": version, "uri": uri, "built_now": False,
                                  "source": "training_rows", "data_fingerprint": trained_on,
                                  "fingerprint_checked": True, "n_rows": len(train_rows)}
        assert store.get_record("reference", f"churn/version={version}") is None  # nothing rebuilt

        other = "0" * 64
        client.set_model_version_tag(model.name, version, "evergreen.data_fingerprint", other)
        run_dag(DAG_ID, logical(day))
        p = record(store, day).payload
        assert p["status"] == "cannot_judge" and p["features"] == [] and p["reference"] == {}
        assert trained_on in p["reason"] and other in p["reason"] and f"champion version {version}" in p["reason"]
    finally:
        client.set_registered_model_alias(model.name, "champion", champion)


# --- a real backfill: `airflow backfill create` + scheduler + API server ---------------------------------------


def test_real_backfill_recomputes_records_but_emits_no_signal(tmp_path, monkeypatch, model):
    """Both monitoring DAGs backfilled by Airflow itself over an interval whose data drifts and decays.

    Isolated: its own EVERGREEN_HOME (store, lake, MLflow) and Airflow home, a DAGs folder with only the two
    monitoring DAGs, the scheduler's own cron scheduling switched off so that only the backfill's runs exist.
    """
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen_demo.simulate import simulate_day
    from evergreen.store.base import Record

    home = tmp_path / "home"
    monkeypatch.setenv("EVERGREEN_HOME", str(home))
    # Past days (a backfill refuses the future), the runs after the model's start_date.
    training = (dt.date(2026, 11, 2), dt.date(2026, 11, 4))
    delay = model.performance.label_delay_days
    drift_day = dt.date(2026, 11, 10)
    perf_day = drift_day - dt.timedelta(days=delay)  # judged by the run covering drift_day
    write_labelled_partitions(model, [training[0], training[0] + dt.timedelta(days=1)], n=1000)
    hook = MlflowHook()
    version = register_champion(model, hook, training)
    store = StoreHook().get_conn()
    # perf_day: decayed scores, judged by the run covering drift_day; drift_day: shifted features
    for day, kw in ((perf_day, {"score_noise": 0.8}), (drift_day, {"drift": 1.5})):
        d = simulate_day(model, day, 2500, model_version=version, **kw)
        store.upsert_predictions(model.name, d.predictions, model.feature_names)
        store.upsert_outcomes(model.name, d.outcomes.rename(columns={model.label.name: "label"}))
    # ingest_feedback has recorded every landing day perf_day's labels arrive on (perf_day .. drift_day)
    for i in range(delay + 1):
        day = perf_day + dt.timedelta(days=i)
        store.put_record(Record("ingestion", f"churn/{day}", "churn", dt.datetime.combine(day, dt.time(),
                                                                                          dt.timezone.utc), {}))
    for kind, day in (("drift", drift_day), ("performance", perf_day)):  # stale records the backfill must replace
        store.put_record(Record(kind, f"churn/{day}", "churn", dt.datetime.combine(day, dt.time(), dt.timezone.utc),
                                {"status": "stale"}))

    dags = tmp_path / "dags"
    dags.mkdir()
    for name in ("monitor_drift.py", "evaluate_performance.py"):
        (dags / name).symlink_to(REPO / "dags" / name)
    airflow_home = home / "airflow"
    port = free_port()
    env = stack_env(home, dags, port)
    airflow(env, "db", "migrate", timeout=180)
    airflow(env, "dags", "reserialize", timeout=180)
    run_day = (drift_day + dt.timedelta(days=1)).isoformat()  # the logical date of the runs covering drift_day
    # a paused DAG's backfill runs stay queued
    airflow(env, "dags", "unpause", "--treat-dag-id-as-regex", "--yes", "^(monitor_drift|evaluate_performance)_churn$",
            timeout=180)
    for dag_id in ("monitor_drift_churn", "evaluate_performance_churn"):
        airflow(env, "backfill", "create", "--dag-id", dag_id, "--from-date", drift_day.isoformat(),
                "--to-date", run_day, timeout=180)

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    try:
        procs += start(env, port, logs)
        db = airflow_home / "airflow.db"
        deadline = time.monotonic() + 300
        runs = []
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as conn:
                runs = conn.execute("SELECT dag_id, run_id, run_type, state FROM dag_run").fetchall()
            if len(runs) == 2 and all(r[3] in ("success", "failed") for r in runs):
                break
            time.sleep(3)
    finally:
        for proc in procs:
            stop(proc)
    tail = "\n".join((logs / f).read_text()[-2000:] for f in ("scheduler.log",))
    assert len(runs) == 2 and all(r[3] == "success" for r in runs), f"runs: {runs}\n{tail}"
    assert {r[2] for r in runs} == {"backfill"}

    with sqlite3.connect(airflow_home / "airflow.db") as conn:
        tis = dict(((d, t), s) for d, t, s in conn.execute("SELECT dag_id, task_id, state FROM task_instance"))
        events = conn.execute("SELECT COUNT(*) FROM asset_event").fetchone()[0]
    assert tis == {("monitor_drift_churn", "detect"): "success", ("monitor_drift_churn", "signal_drift"): "skipped",
                   ("evaluate_performance_churn", "evaluate"): "success",
                   ("evaluate_performance_churn", "signal_decay"): "skipped"}
    assert events == 0, "a backfill must emit no Asset event"

    drift = store.get_record("drift", f"churn/{drift_day}").payload
    perf = store.get_record("performance", f"churn/{perf_day}").payload
    assert drift["status"] == "ok" and drift["dataset_drift"] is True and drift["backfill"] is True
    assert perf["status"] == "decay" and perf["backfill"] is True
    assert drift["airflow"]["run_type"] == perf["airflow"]["run_type"] == "backfill"
    assert store.list_records("alert", "churn") == [], "a backfill sends no alert"
