"""Alerts are data: hostile file names, exception messages and Params reach the e-mail (a fake SMTP server) and the
Slack message (a fake Incoming Webhook) as text, never rendered as Jinja, and the suggested rerun command gives back
exactly its argv in a shell."""

from __future__ import annotations

import datetime as dt
import html
import json
import shlex
import subprocess
from types import SimpleNamespace

import pytest
from fake_slack import FakeSlackWebhook
from fake_smtp import FakeSmtpServer

from evergreen.config import PlatformConfig
from evergreen.notifiers.alert import (
    EmailAlertNotifier,
    FailureNotifier,
    SlackAlertNotifier,
    deliver,
    failure_alert,
    shell_command,
    signal_alert,
)
from evergreen.store import open_store

SECRET = "planted-smtp-password-4711"
# closes the old {% raw %} wrapper, then asks Airflow's `conn` accessor for a password (the issue's example); the
# second one reopens the wrapper, so the old template parsed and the password went out in the e-mail
HOSTILE_FILE = "x{% endraw %}{{ conn.smtp_default.password }}.csv"
REOPENING_FILE = "x{% endraw %}{{ conn.smtp_default.password }}{% raw %}.csv"
SHELL_FILE = "y$(touch pwned-file)`touch pwned-tick`'; touch pwned-quote; '.csv"
HOSTILE_PARAMS = {
    "force": True,
    "window_start": "2027-01-01'; touch pwned-param; echo '",
    "hyperparameters": {"max_depth": "$(touch pwned-dollar)", "note": "{{ conn.smtp_default.password }}{% endraw %}"},
}


@pytest.fixture
def smtp(monkeypatch):
    with FakeSmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", server.connection_json())
        # the Connection a template would read: its password must never reach an alert
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({"conn_type": "smtp", "host": "mail.internal",
                                                                    "login": "ops", "password": SECRET}))
        yield server


@pytest.fixture
def slack(monkeypatch):
    with FakeSlackWebhook() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SLACK", server.connection_json())
        yield server


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def platform(*destinations: str) -> PlatformConfig:
    return PlatformConfig(alert_destinations=destinations, smtp_conn_id="fake_smtp", slack_conn_id="fake_slack",
                          alert_emails=("ops@example.com",), airflow_base_url="http://airflow.example:8080")


def task_context(error: str, *, params: dict | None = None, logical_date: dt.datetime | None = None,
                 task_id: str = "ingest") -> dict:
    """A failed task's context as the on_failure_callback gets it, with Airflow's real ``conn`` accessor."""
    from airflow.sdk.execution_time.context import ConnectionAccessor

    ti = SimpleNamespace(dag_id="ingest_feedback_churn", task_id=task_id, run_id="manual__2027-01-06T00:00:00+00:00",
                         try_number=1, map_index=-1)
    return {"ti": ti, "exception": ValueError(error), "params": params or {}, "logical_date": logical_date,
            "data_interval_start": dt.datetime(2027, 1, 5, tzinfo=dt.timezone.utc),
            "data_interval_end": dt.datetime(2027, 1, 6, tzinfo=dt.timezone.utc), "conn": ConnectionAccessor()}


def slack_text(payload: dict) -> str:
    return payload["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@pytest.mark.parametrize("name", [HOSTILE_FILE, REOPENING_FILE])
def test_a_file_name_that_closes_raw_does_not_render_the_smtp_password(smtp, slack, store, name):
    context = task_context(f"outcome file landing/churn/dt=2027-01-05/{name}: column 'label' missing")
    p = platform("log", "email", "slack")
    result = deliver(failure_alert("churn", context, platform=p), context, platform=p, store=store)
    assert result == {"log": {"status": "sent"}, "email": {"status": "sent"}, "slack": {"status": "sent"}}
    ((_, _, msg),) = smtp.messages
    (body,) = smtp.bodies()
    assert name in html.unescape(body)
    (payload,) = slack.payloads
    assert name in slack_text(payload)
    record = store.get_record("alert", "churn/2027-01-05/failure/ingest_feedback_churn/ingest")
    for text in (body, msg["Subject"], json.dumps(payload), json.dumps(record.payload)):
        assert SECRET not in text


def test_hostile_file_names_and_params_reach_email_and_slack_as_text(smtp, slack, store):
    error = f"outcome files {HOSTILE_FILE} and {SHELL_FILE} cannot be read"
    context = task_context(error, params=HOSTILE_PARAMS)
    p = platform("log", "email", "slack")
    alert = failure_alert("churn", context, platform=p)
    assert deliver(alert, context, platform=p, store=store)["email"]["status"] == "sent"
    conf = json.dumps(HOSTILE_PARAMS)
    (body,) = smtp.bodies()
    (payload,) = slack.payloads
    for shown in (html.unescape(body), slack_text(payload)):
        assert SECRET not in shown
        assert HOSTILE_FILE in shown and SHELL_FILE in shown
        assert conf in shown  # the Params, in the note
        assert alert.rerun["command"] in shown  # the quoted command, whole
    # the HTML escapes every value: the hostile text never becomes markup
    assert "'; touch" not in body


def test_slack_text_cannot_mention_the_channel_or_fake_a_link(slack, store):
    context = task_context("file <!channel> <http://evil.example|open the run> & co.csv is bad")
    p = platform("log", "slack")
    assert deliver(failure_alert("churn", context, platform=p), context, platform=p, store=store)["slack"] == {
        "status": "sent"}
    (payload,) = slack.payloads
    assert "<!channel>" not in payload["text"] and "<http://evil" not in payload["text"]
    assert "&lt;!channel&gt; &lt;http://evil.example|open the run&gt; &amp; co.csv" in payload["text"]


def test_the_notifiers_template_nothing():
    from airflow.sdk.execution_time.context import ConnectionAccessor

    for cls in (EmailAlertNotifier, SlackAlertNotifier, FailureNotifier):
        assert tuple(cls.template_fields) == (), cls
    notifier = EmailAlertNotifier(to=["a@example.com"], subject="{{ conn.smtp_default.password }}",
                                  html_content=HOSTILE_FILE, smtp_conn_id="{{ 'x' }}")
    notifier.render_template_fields({"conn": ConnectionAccessor()})
    assert (notifier.subject, notifier.html_content, notifier.smtp_conn_id) == (
        "{{ conn.smtp_default.password }}", HOSTILE_FILE, "{{ 'x' }}")


# --- the rerun command is safe to paste ---------------------------------------------------------------------------


def run_in_bash(command: str, cwd) -> list[str]:
    """What ``airflow`` would receive as argv if ``command`` were pasted into bash (``airflow`` is a shell
    function here that prints its arguments)."""
    script = 'airflow() { printf "%s\\0" airflow "$@"; }\n' + command
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\0")[:-1]


def test_a_manual_run_rerun_triggers_the_dag_with_exactly_its_params(tmp_path):
    alert = failure_alert("churn", task_context(SHELL_FILE, params=HOSTILE_PARAMS), platform=platform("log"))
    argv = ["airflow", "dags", "trigger", "ingest_feedback_churn", "--conf", json.dumps(HOSTILE_PARAMS)]
    assert alert.rerun["argv"] == argv
    assert shlex.split(alert.rerun["command"]) == argv
    assert run_in_bash(alert.rerun["command"], tmp_path) == argv
    assert list(tmp_path.iterdir()) == []  # nothing in it ran: no pwned-* file
    assert json.loads(shlex.split(alert.rerun["command"])[-1]) == HOSTILE_PARAMS


def test_a_scheduled_run_rerun_clears_exactly_that_task(tmp_path):
    logical = dt.datetime(2027, 1, 6, 1, tzinfo=dt.timezone.utc)
    context = task_context(SHELL_FILE, params=HOSTILE_PARAMS, logical_date=logical, task_id="checks.ingest")
    alert = failure_alert("churn", context, platform=platform("log"))
    stamp = "2027-01-06T01:00:00+00:00"
    argv = ["airflow", "tasks", "clear", "ingest_feedback_churn", "--task-regex", r"^checks\.ingest$",
            "--start-date", stamp, "--end-date", stamp, "--yes"]
    assert shlex.split(alert.rerun["command"]) == argv == alert.rerun["argv"]
    assert run_in_bash(alert.rerun["command"], tmp_path) == argv
    assert list(tmp_path.iterdir()) == []


def test_a_signal_alert_suggests_the_forced_retrain():
    context = task_context("drift")
    alert = signal_alert(model="churn", signal="drift", day="2027-01-05", window={}, summary="drifted",
                         numbers={}, record_key="drift:churn/2027-01-05", context=context, platform=platform("log"))
    assert alert.rerun["command"] == """airflow dags trigger retrain_churn --conf '{"force": true}'"""  # as the README
    assert shlex.split(alert.rerun["command"]) == alert.rerun["argv"]


@pytest.mark.parametrize("part", [HOSTILE_FILE, SHELL_FILE, "-rf", "", "a b", "\"'\\\n"])
def test_shell_command_round_trips_any_part(part):
    argv = ["airflow", "dags", "trigger", part, "--conf", json.dumps({"p": part})]
    assert shlex.split(shell_command(argv)) == argv
