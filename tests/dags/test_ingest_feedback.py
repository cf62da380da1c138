"""ingest_feedback_<model> through Airflow: dag.test() runs of the real DAG against the session's embedded store,
lake and landing zone, and a real backfill (`airflow backfill create` executed by a scheduler, an API server and
the LocalExecutor) over days that daily runs already ingested.

Days used here (2027-02-xx) are far from the other modules' so their records and partitions never meet.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from evergreen import lake
from evergreen_demo import simulate
from evergreen.config import get_config
from evergreen.ingest import tasks
from evergreen.paths import home

from airflow_stack import airflow, free_port, stack_env, start, stop

REPO = Path(__file__).resolve().parents[2]
MODEL = get_config().model("churn")
DAG_ID = "ingest_feedback_churn"


def logical(day: dt.date) -> str:
    """The logical date of the daily run whose data interval is ``day`` (the cron tick at the end of it)."""
    return f"{day + dt.timedelta(days=1)}T01:00:00+00:00"


_STORES: dict = {}


def store():
    """The store the task uses (the ``evergreen_store`` Connection, or the embedded SQLite file of EVERGREEN_HOME)."""
    from evergreen.hooks.store import StoreHook

    hook = StoreHook()
    if hook.uri not in _STORES:
        _STORES[hook.uri] = hook.get_conn()
    return _STORES[hook.uri]


def forget_store() -> None:
    """Close the current home's store (before its file is deleted)."""
    from evergreen.hooks.store import StoreHook

    uri = StoreHook().uri
    if uri in _STORES:
        _STORES.pop(uri).close()


def land(day: dt.date, name: str, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> Path:
    folder = Path(lake.landing_dir(MODEL.name, day))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if raw is not None:
        path.write_bytes(raw)
    elif name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


def log_and_land(pred_day: dt.date, n: int, name: str = "outcomes.csv") -> simulate.Day:
    """Log ``n`` predictions of ``pred_day`` in the store and land their outcomes the next day as a CSV file."""
    d = simulate.simulate_day(MODEL, pred_day, n)
    store().upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)
    out = simulate.outcome_file_frame(MODEL, d)
    out[MODEL.timestamp] = out[MODEL.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    land(pred_day + dt.timedelta(days=1), name, out)
    return d


def xcom(dr) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.execute(XComModel.get_many(run_id=dr.run_id, dag_ids=DAG_ID, task_ids="ingest",
                                                   key="return_value").with_only_columns(XComModel.value)).scalar()
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def ti_states(dr) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


def test_one_dag_per_model_wired_as_decided(dagbag):
    for name, model in get_config().models.items():
        dag = dagbag.get_dag(f"ingest_feedback_{name}")
        assert dag is not None, dagbag.import_errors
        assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
        assert dag.timetable.expression == model.schedules.ingest_feedback
        assert dag.catchup is False
        assert dag.start_date == dt.datetime.combine(model.start_date, dt.time(), tzinfo=dt.timezone.utc)
        assert set(dag.tags) == {"evergreen", name, "ingestion"}
        assert [t.task_id for t in dag.tasks] == ["ingest"]
        assert dag.tasks[0].retries >= 2 and dag.tasks[0].retry_exponential_backoff
        assert "landing" in dag.doc_md and "quarantine" in dag.doc_md


def test_daily_run_lands_valid_rows_quarantines_bad_ones_and_says_why(run_dag, caplog):
    pred_day = dt.date(2027, 2, 1)
    day = pred_day + dt.timedelta(days=1)
    d = log_and_land(pred_day, 60)
    again = d.outcomes.iloc[1]  # churn-20270201-0000001, landed again below exactly as in outcomes.csv
    bad = pd.DataFrame({
        MODEL.request_id: [again["request_id"], "ghost", "churn-20270201-0000002"],
        MODEL.timestamp: [again["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "2027-02-02T08:00:00Z", "whenever"],
        MODEL.label.name: [str(again[MODEL.label.name]), "0", "1"],
    })
    land(day, "zz-late.csv", bad)  # its first row repeats one of outcomes.csv identically: a duplicate

    with caplog.at_level(logging.INFO, logger="evergreen.ingest"):
        dr = run_dag(DAG_ID, logical(day))

    assert ti_states(dr) == {"ingest": "success"}
    payload = store().get_record("ingestion", f"churn/{day}").payload
    assert (payload["rows_read"], payload["landed"], payload["quarantined"], payload["unmatched"]) == (63, 60, 3, 1)
    assert payload["reasons"] == {"bad_timestamp": 1, "duplicate_request_id": 1, "unmatched": 1}
    assert payload["labelled_uri"] == lake.labelled_path("churn", day)
    labelled = lake.read_parquet(payload["labelled_uri"])
    assert sorted(labelled["request_id"]) == sorted(d.predictions["request_id"])
    quarantine = lake.read_parquet(payload["quarantine_uri"])
    assert sorted(quarantine["reason_code"]) == ["bad_timestamp", "duplicate_request_id", "unmatched"]
    stored = store().read_outcomes(MODEL.name, request_ids=d.outcomes["request_id"])
    assert len(stored) == 60

    summary = xcom(dr)  # small: counts and URIs, no data
    assert summary["interval"] == [str(day), str(day + dt.timedelta(days=1))] and summary["backfill"] is False
    assert summary["days"][str(day)] == {k: payload[k] for k in ("rows_read", "landed", "quarantined", "unmatched",
                                                                   "labelled_uri", "quarantine_uri")}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "60 landed, 3 quarantined (1 unmatched)" in text
    assert "quarantined as unmatched" in text and "'ghost'" in text
    assert "quarantined as bad_timestamp" in text and "'whenever'" in text


@pytest.fixture
def smtp(monkeypatch, tmp_path):
    """Alerts of this test go to the log and, by email, to a fake SMTP server (the config's platform block)."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("fake_smtp", REPO / "tests/plugins/evergreen/notifiers/fake_smtp.py")
    fake_smtp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake_smtp)
    config = tmp_path / "config"
    config.mkdir()
    for f in (REPO / "include" / "config").glob("*.y*ml"):
        shutil.copy(f, config / f.name)
    (config / "zz_platform.yaml").write_text(
        "platform:\n  alert_destinations: [log, email]\n  smtp_conn_id: fake_smtp\n"
        "  alert_emails: [ops@example.com]\n  airflow_base_url: http://airflow.example:8080\n")
    monkeypatch.setenv("EVERGREEN_CONFIG_DIR", str(config))
    with fake_smtp.FakeSmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", server.connection_json())
        yield server


def test_unreadable_and_ignored_files_do_not_block_the_day_and_send_one_alert(run_dag, smtp, caplog):
    # Was: an unreadable file failed the task before anything was written (issue 8 item 4 changes that).
    day = dt.date(2027, 2, 5)
    log_and_land(day - dt.timedelta(days=1), 5)
    broken = land(day, "broken.parquet", raw=b"PAR1 not really")
    notes = land(day, "notes.txt", raw=b"not an outcome file")

    with caplog.at_level(logging.INFO):
        dr = run_dag(DAG_ID, logical(day))

    assert ti_states(dr) == {"ingest": "success"}
    payload = store().get_record("ingestion", f"churn/{day}").payload
    assert (payload["landed"], payload["quarantined"], payload["reasons"]) == (5, 1, {"unreadable_file": 1})
    (unreadable,) = payload["files_unreadable"]
    assert unreadable["file"] == str(broken) and "cannot be read as PARQUET" in unreadable["reason"]
    assert Path(unreadable["kept_at"]).read_bytes() == b"PAR1 not really"
    assert [f["file"] for f in payload["files_ignored"]] == [str(notes)]
    assert len(store().read_outcomes(MODEL.name, request_ids=[f"churn-20270204-{i:07d}" for i in range(5)])) == 5
    assert str(broken) in caplog.text and "unreadable" in caplog.text

    alert = store().get_record("alert", f"churn/{day}/landing").payload
    assert "broken.parquet" in alert["summary"] and "notes.txt" in alert["summary"]
    assert alert["links"]["airflow_run"].startswith(f"http://airflow.example:8080/dags/{DAG_ID}/runs/")
    assert alert["deliveries"] == {"log": {"status": "sent"}, "email": {"status": "sent"}}
    assert xcom(dr)["alerts"] == {str(day): {"log": "sent", "email": "sent"}}
    (body,) = smtp.bodies()
    assert "broken.parquet" in body and "notes.txt" in body and "airflow tasks clear" in body

    again = run_dag(DAG_ID, logical(day))  # a re-run finds the same files: the same alert, not sent twice
    assert ti_states(again) == {"ingest": "success"}
    assert xcom(again)["alerts"] == {str(day): {"log": "sent", "email": "already_sent"}}
    assert len(smtp.messages) == 1


def test_a_backfill_that_finds_a_bad_file_alerts_too():
    """Ingestion facts are recomputed in a backfill, and a file whose rows reached no store is such a fact: unlike a
    drift or decay signal (which a backfill never sends), the landing alert goes out, once per content."""
    from types import SimpleNamespace

    import pendulum

    day = dt.date(2027, 2, 7)
    log_and_land(day - dt.timedelta(days=1), 3)
    land(day, "late.csv.gz", raw=b"not gzip at all")
    context = {"data_interval_start": pendulum.datetime(2027, 2, 7, 1),
               "data_interval_end": pendulum.datetime(2027, 2, 8, 1),
               "dag_run": SimpleNamespace(run_type="backfill", dag_id=DAG_ID, run_id="backfill__2027-02-07")}

    out = tasks.run_for_context(MODEL.name, context)

    assert out["backfill"] is True and out["alerts"] == {str(day): {"log": "sent"}}
    alert = store().get_record("alert", f"churn/{day}/landing").payload
    assert alert["source"]["run_type"] == "backfill" and "late.csv.gz" in alert["summary"]
    assert "python -m evergreen.ingest" in alert["rerun"]["command"]  # no logical date in this context


def test_reruns_through_airflow_and_the_entry_point_leave_identical_state(run_dag):
    """Ten runs of one interval: eight through the function the task calls, two through Airflow's dag.test()."""
    pred_day = dt.date(2027, 2, 9)
    day = pred_day + dt.timedelta(days=1)
    log_and_land(pred_day, 200)
    land(day, "bad.csv", pd.DataFrame({MODEL.request_id: ["x"], MODEL.timestamp: ["2027-02-10"],
                                       MODEL.label.name: ["3"]}))
    hist = simulate.outcome_file_frame(MODEL, simulate.simulate_day(MODEL, dt.date(2027, 1, 9), 30), True)
    land(day, "history.parquet", hist)

    digests = []
    for i in range(10):
        if i in (3, 7):
            # dropping the partitions first shows each dag.test() run really re-ran the task and rewrote them
            lake.remove(lake.partition_dir(MODEL.name, "labelled", day))
            lake.remove(lake.partition_dir(MODEL.name, "quarantine", day))
            assert ti_states(run_dag(DAG_ID, logical(day))) == {"ingest": "success"}
        else:
            tasks.ingest_interval(MODEL, day, day + dt.timedelta(days=1), store())
        digests.append(tasks.state_digest(store(), MODEL.name, [day]))
    assert digests[0][f"lake/labelled/dt={day}/part-0.parquet"]["rows"] == 230
    assert digests[0][f"lake/quarantine/dt={day}/part-0.parquet"]["rows"] == 1
    assert all(dg == digests[0] for dg in digests)


# --- a real backfill: `airflow backfill create` + scheduler + API server ---------------------------------------


def _runs(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT run_id, run_type, state, substr(data_interval_start, 1, 10) FROM dag_run WHERE dag_id = ? "
            "ORDER BY data_interval_start, run_id", (DAG_ID,)
        ).fetchall()


def _wait_for_runs(db: Path, done, procs: list, logs: Path, timeout: float = 420) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _runs(db)
        if done(runs):
            return runs
        dead = [p.args[1] for p in procs if p.poll() is not None]
        assert not dead, f"airflow {dead} exited:\n" + (logs / "scheduler.log").read_text()[-3000:]
        time.sleep(2)
    raise AssertionError(f"runs did not finish in {timeout}s: {_runs(db)}\n" +
                         (logs / "scheduler.log").read_text()[-3000:])


# What the scheduler does when a daily run is due (SchedulerJobRunner._create_dag_runs): a SCHEDULED run with the
# timetable's logical date and data interval, queued. Done here for past days because the DAG has catchup=False.
_SCHEDULE_DAYS = """
import sys
from airflow.models.dagrun import DagRun
from airflow.models.serialized_dag import SerializedDagModel
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType
import pendulum

dag = SerializedDagModel.get_dag(sys.argv[1])
with create_session() as session:
    for info in dag.iter_dagrun_infos_between(pendulum.parse(sys.argv[2]), pendulum.parse(sys.argv[3])):
        dag.create_dagrun(
            run_id=dag.timetable.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=info.run_after,
                                                 data_interval=info.data_interval, partition_key=None),
            logical_date=info.logical_date, data_interval=info.data_interval, run_after=info.run_after,
            run_type=DagRunType.SCHEDULED, triggered_by=DagRunTriggeredByType.TIMETABLE, state=DagRunState.QUEUED,
            session=session,
        )
"""


def _tick(day: dt.date) -> str:
    """The logical date Airflow gives the scheduled (and backfill) run covering ``day``: the start of its interval."""
    return f"{day}T01:00:00+00:00"


@pytest.mark.slow
def test_backfill_over_days_already_run_leaves_identical_store_and_lake(tmp_path, monkeypatch):
    """Scheduled daily runs ingest days 1-3; then `airflow backfill create --reprocess-behavior completed` re-runs
    days 2-4, all executed by a real scheduler (LocalExecutor) and API server.

    Isolated: its own EVERGREEN_HOME (store, lake, landing zone) and Airflow home with only this DAG; the scheduler's
    own cron scheduling is off so the only runs are the daily ones queued here and the backfill's. The state after
    the backfill must equal what one clean ingestion of days 1-4 leaves from the same inputs.
    """
    days = [dt.date(2026, 11, 10) + dt.timedelta(days=i) for i in range(4)]  # past days: a backfill refuses the future
    if dt.datetime.now(dt.timezone.utc).date() <= days[-1] + dt.timedelta(days=1):
        pytest.skip(f"the machine's clock is before {days[-1] + dt.timedelta(days=2)}: Airflow backfills past days only")
    eg_home = tmp_path / "home"
    monkeypatch.setenv("EVERGREEN_HOME", str(eg_home))

    def log_predictions() -> None:
        for day in days:
            d = simulate.simulate_day(MODEL, day - dt.timedelta(days=1), 150)
            store().upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)

    for day in days:
        log_and_land(day - dt.timedelta(days=1), 150)
    land(days[1], "zz-bad.csv", pd.DataFrame({MODEL.request_id: ["nobody", ""], MODEL.timestamp: ["2026-11-11", "x"],
                                              MODEL.label.name: ["1", "5"]}))
    land(days[2], "zz-broken.csv.gz", raw=b"a truncated upload")  # kept whole in quarantine, alerted
    # The reference: one clean ingestion of the four days; then the same inputs again with nothing ingested.
    tasks.ingest_interval(MODEL, days[0], days[-1] + dt.timedelta(days=1), store())
    clean = tasks.state_digest(store(), MODEL.name, days)
    assert clean[f"lake/quarantine/dt={days[1]}/part-0.parquet"]["rows"] == 2
    assert clean[f"lake/quarantine-files/dt={days[2]}/zz-broken.csv.gz"]["bytes"] == len(b"a truncated upload")
    forget_store()
    for leftover in eg_home.glob("store.db*"):
        leftover.unlink()
    lake.remove(home().lake)
    log_predictions()
    assert tasks.state_digest(store(), MODEL.name, days)["store/outcomes"]["rows"] == 0

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ingest_feedback.py").symlink_to(REPO / "dags" / "ingest_feedback.py")
    airflow_home = eg_home / "airflow"
    port = free_port()
    env = stack_env(eg_home, dags, port)
    airflow(env, "db", "migrate")
    airflow(env, "dags", "reserialize")
    airflow(env, "dags", "unpause", DAG_ID)  # a paused DAG's runs stay queued
    db = airflow_home / "airflow.db"
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        procs += start(env, port, logs)
        # The daily runs of days 1-3.
        out = subprocess.run([sys.executable, "-c", _SCHEDULE_DAYS, DAG_ID, _tick(days[0]), _tick(days[2])],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        daily = _wait_for_runs(db, lambda rs: len(rs) == 3 and all(r[2] in ("success", "failed") for r in rs),
                               procs, logs)
        assert [(r[1], r[2], r[3]) for r in daily] == [("scheduled", "success", str(d)) for d in days[:3]]
        after_daily = tasks.state_digest(store(), MODEL.name, days)

        # The backfill over days 2-4: two days already ingested by the daily runs, one new.
        airflow(env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", _tick(days[1]),
                 "--to-date", _tick(days[3]), "--reprocess-behavior", "completed")
        runs = _wait_for_runs(db, lambda rs: sum(r[1] == "backfill" for r in rs) == 3
                              and all(r[2] in ("success", "failed") for r in rs), procs, logs)
    finally:
        for proc in procs:
            stop(proc)
    assert [(r[1], r[2], r[3]) for r in runs] == [("scheduled", "success", str(days[0]))] + [
        ("backfill", "success", str(d)) for d in days[1:]
    ], runs

    after_backfill = tasks.state_digest(store(), MODEL.name, days)
    assert after_backfill == clean
    alert = store().get_record("alert", f"churn/{days[2]}/landing").payload  # the backfill re-sent the same alert
    assert alert["source"]["run_type"] == "backfill" and "zz-broken.csv.gz" in alert["summary"]
    for day in days[:3]:  # what the daily runs wrote is exactly what the backfill rewrote
        for dataset in ("labelled", "quarantine"):
            key = f"lake/{dataset}/dt={day}/part-0.parquet"
            assert after_daily[key] == clean[key], key
