"""Alerts: routing to the log + store and through the SMTP provider's SmtpHook to a fake SMTP server,
de-duplication, a destination that is missing or broken, and a real task failure alerting through the
on_failure_callback."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from fake_smtp import FakeSmtpServer

from evergreen.config import PlatformConfig
from evergreen.links import airflow_run_url
from evergreen.notifiers.alert import Alert, deliver, failure_notifier
from evergreen.store import open_store

REPO = Path(__file__).resolve().parents[4]


@pytest.fixture
def smtp(monkeypatch):
    with FakeSmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", server.connection_json())
        yield server


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def platform(*destinations: str, smtp_conn_id: str = "fake_smtp") -> PlatformConfig:
    return PlatformConfig(alert_destinations=destinations, smtp_conn_id=smtp_conn_id,
                          alert_emails=("ops@example.com",), airflow_base_url="http://airflow.example:8080")


def decay_alert(live: float = 0.71) -> Alert:
    return Alert(model="churn", signal="decay", day="2027-01-05", title="churn: decay on 2027-01-05",
                 summary=f"roc_auc {live} vs baseline 0.79", window={"start": "2027-01-05", "end": "2027-01-06"},
                 numbers={"live": live, "baseline": 0.79},
                 links={"airflow_run": "http://airflow.example:8080/dags/evaluate_performance_churn/runs/r1"},
                 rerun={"dag_id": "retrain_churn", "conf": {"force": True},
                        "command": "airflow dags trigger retrain_churn --conf '{\"force\": true}'", "note": "force"})


def test_log_and_email_destinations_receive_the_alert_with_numbers_links_and_rerun(smtp, store):
    alert = decay_alert()
    result = deliver(alert, None, platform=platform("log", "email"), store=store)
    assert result == {"log": {"status": "sent"}, "email": {"status": "sent"}}
    ((sender, rcpts, msg),) = smtp.messages
    assert rcpts == ["<ops@example.com>"] and "evergreen@example.com" in sender
    assert msg["Subject"] == "[evergreen] churn: decay on 2027-01-05"
    (body,) = smtp.bodies()
    for text in ("0.71", "0.79", "http://airflow.example:8080/dags/evaluate_performance_churn/runs/r1",
                 "airflow dags trigger retrain_churn", "[2027-01-05, 2027-01-06)"):
        assert text in body.replace("&quot;", '"').replace("&#x27;", "'")
    rec = store.get_record("alert", "churn/2027-01-05/decay")
    assert rec.ts == dt.datetime(2027, 1, 5, tzinfo=dt.timezone.utc)
    assert rec.payload["deliveries"]["email"]["status"] == "sent" and rec.payload["rerun"]["dag_id"] == "retrain_churn"


def test_the_same_alert_is_not_sent_twice_but_new_numbers_are(smtp, store):
    p = platform("log", "email")
    deliver(decay_alert(), None, platform=p, store=store)
    again = deliver(decay_alert(), None, platform=p, store=store)
    assert again["email"] == {"status": "already_sent"} and len(smtp.messages) == 1
    changed = deliver(decay_alert(live=0.65), None, platform=p, store=store)
    assert changed["email"] == {"status": "sent"} and len(smtp.messages) == 2
    assert len(store.list_records("alert", "churn")) == 1  # one record per key, replaced


def test_missing_or_broken_destinations_are_recorded_and_do_not_stop_the_others(smtp, store):
    result = deliver(decay_alert(), None, platform=platform("log", "slack", "pager", "email"), store=store)
    assert result["log"]["status"] == "sent" and result["email"]["status"] == "sent"
    # the Slack provider is installed, but no Slack Connection is defined here
    assert result["slack"]["status"] == "failed" and "slack_default" in result["slack"]["error"]
    assert result["pager"]["status"] == "failed" and "unknown alert destination 'pager'" in result["pager"]["error"]
    assert len(smtp.messages) == 1
    assert store.get_record("alert", "churn/2027-01-05/decay").payload["deliveries"] == result


def test_an_unreachable_smtp_server_fails_the_destination_not_the_caller(monkeypatch, store):
    with FakeSmtpServer() as server:
        conn = server.connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", conn)  # the server is gone: connection refused
    result = deliver(decay_alert(), None, platform=platform("log", "email"), store=store)
    assert result["log"]["status"] == "sent" and result["email"]["status"] == "failed"
    assert store.get_record("alert", "churn/2027-01-05/decay").payload["deliveries"]["email"]["status"] == "failed"
    # once it is back, a retry sends what failed
    with FakeSmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", server.connection_json())
        assert deliver(decay_alert(), None, platform=platform("log", "email"), store=store)["email"]["status"] == "sent"
        assert len(server.messages) == 1


def test_airflow_links_quote_run_ids():
    url = airflow_run_url("http://a:8080/", "retrain_churn", "manual__2027-01-05T00:00:00+00:00", "train", 3)
    assert url == "http://a:8080/dags/retrain_churn/runs/manual__2027-01-05T00%3A00%3A00%2B00%3A00/tasks/train/mapped/3"


def test_failure_notifier_is_an_airflow_notifier():
    from airflow.sdk import BaseNotifier

    notifier = failure_notifier("churn")
    assert isinstance(notifier, BaseNotifier) and notifier.model_name == "churn"


@pytest.mark.slow
def test_a_failed_task_sends_one_alert_naming_the_error_links_and_rerun(run_dag, dagbag, smtp, monkeypatch, tmp_path):
    """A real failure: evaluate_performance_churn with an MLflow Connection that has no host."""
    from evergreen.hooks.store import StoreHook

    config = tmp_path / "config"
    config.mkdir()
    for f in (REPO / "include" / "config").glob("*.y*ml"):
        shutil.copy(f, config / f.name)
    (config / "zz_platform.yaml").write_text(
        "platform:\n  alert_destinations: [log, email]\n  smtp_conn_id: fake_smtp\n"
        "  alert_emails: [ops@example.com]\n  airflow_base_url: http://airflow.example:8080\n")
    monkeypatch.setenv("EVERGREEN_CONFIG_DIR", str(config))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", '{"conn_type": "mlflow"}')
    dag = dagbag.get_dag("evaluate_performance_churn")
    retries = {t.task_id: t.retries for t in dag.tasks}
    for t in dag.tasks:  # dag.test() waits out retry delays; the callback under test fires on the final failure
        t.retries = 0
    try:
        dr = run_dag("evaluate_performance_churn", "2027-05-03T12:00:00+00:00")
    finally:
        for t in dag.tasks:
            t.retries = retries[t.task_id]
    assert {ti.task_id: str(ti.state) for ti in dr.get_task_instances()} == {
        "evaluate": "failed", "signal_decay": "upstream_failed"}

    rec = StoreHook().get_conn().get_record("alert", "churn/2027-05-02/failure/evaluate_performance_churn/evaluate")
    assert rec is not None
    p = rec.payload
    assert "AirflowConfigException" in p["summary"] and "mlflow_default" in p["summary"]
    assert p["window"] == {"start": "2027-05-02", "end": "2027-05-03"}
    assert p["links"]["airflow_task"].startswith("http://airflow.example:8080/dags/evaluate_performance_churn/runs/")
    assert p["links"]["airflow_task"].endswith("/tasks/evaluate")
    assert "airflow tasks clear evaluate_performance_churn --task-regex '^evaluate$'" in p["rerun"]["command"]
    assert p["deliveries"] == {"log": {"status": "sent"}, "email": {"status": "sent"}}
    ((_, _, msg),) = smtp.messages
    assert msg["Subject"] == "[evergreen] churn: task evaluate_performance_churn.evaluate failed"
