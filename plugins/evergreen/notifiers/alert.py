"""Platform alerts: one per failed task and one per drift or decay signal, routed to configurable destinations.

An :class:`Alert` carries the model, the window, the numbers, links (the Airflow run, the MLflow run) and the
manual rerun to try (the DAG id and its Params or conf). :func:`deliver` sends it to every destination of
``PlatformConfig.alert_destinations``:

* ``log`` -- always, whatever the config says: the task log and a store record of kind ``"alert"`` under a
  deterministic key (``<model>/<day>/<signal>[/<dag>/<task>]``), so a re-run replaces the record instead of
  adding one;
* ``email`` -- an HTML e-mail (every value escaped) to ``PlatformConfig.alert_emails`` through the
  ``smtp_conn_id`` Connection, sent with the SMTP provider's ``SmtpHook`` (apache-airflow-providers-smtp);
* ``slack`` -- a Slack message through ``slack_conn_id``, sent with the Slack provider's ``SlackWebhookHook``
  (apache-airflow-providers-slack); ``&``, ``<`` and ``>`` are escaped, so the text cannot ping or fake a link.

**An alert is data, never a template.** File names, exception messages and Params reach an alert's text. Airflow's
``SmtpNotifier`` and ``SlackWebhookNotifier`` render their fields with Jinja, and no wrapper makes that safe: a
landed file named ``x{% endraw %}{{ conn.smtp_default.password }}{% raw %}.csv`` closes ``{% raw %}`` and puts the
SMTP password in the e-mail. The two notifiers here (:class:`EmailAlertNotifier`, :class:`SlackAlertNotifier`) have
no template fields and hand the text to the hooks as it is. The suggested rerun command is built with
``shlex.quote`` on every part (:func:`shell_command`), so pasting it into a shell runs exactly that command,
whatever the DAG id, task id or Params hold.

The store record remembers which destinations were reached for the alert's fingerprint (its content), so a retried
signal task or a re-run with the same numbers does not send the same alert twice; a destination that failed is
tried again. A destination that fails never fails the task and never stops the others: the failure is logged and
kept in the record.

:func:`failure_notifier` is the ``on_failure_callback`` of every task (wired by ``evergreen.dag_common.default_args``).

Imported at DAG parse time (through dag_common): nothing heavy at module level.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

from evergreen.context import airflow_info, interval_days
from evergreen.links import airflow_run_url, mlflow_run_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from evergreen.config import PlatformConfig
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

ALERT_KIND = "alert"
SLACK_PIN = "apache-airflow-providers-slack==9.11.1"


class AlertDestinationError(RuntimeError):
    """A destination cannot be used as configured; the message says what to install or set."""


@dataclass(frozen=True)
class Alert:
    model: str
    signal: str  # "failure" | "drift" | "decay"
    day: str  # YYYY-MM-DD: the day of the window the alert is about
    title: str
    summary: str
    window: dict[str, str] = field(default_factory=dict)  # {"start": ..., "end": ...} (end exclusive)
    numbers: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str | None] = field(default_factory=dict)
    rerun: dict[str, Any] = field(default_factory=dict)  # {"dag_id", "conf" or "params", "argv", "command", "note"}
    source: dict[str, Any] = field(default_factory=dict)  # dag_id, run_id, task_id, try_number, run_type
    key_suffix: str = ""

    @property
    def key(self) -> str:
        base = f"{self.model}/{self.day}/{self.signal}"
        return f"{base}/{self.key_suffix}" if self.key_suffix else base

    @property
    def fingerprint(self) -> str:
        """What makes two alerts the same alert: content, not delivery details or links."""
        doc = {"key": self.key, "summary": self.summary, "numbers": self.numbers, "window": self.window}
        if self.signal == "failure":  # a new failed try is a new failure
            doc["attempt"] = [self.source.get("run_id"), self.source.get("try_number")]
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key, "fingerprint": self.fingerprint}

    def text(self) -> str:
        lines = [f"[evergreen] {self.title}", self.summary]
        if self.window:
            lines.append(f"window: [{self.window.get('start')}, {self.window.get('end')})")
        for name, value in self.numbers.items():
            lines.append(f"  {name}: {_fmt(value)}")
        for name, url in self.links.items():
            if url:
                lines.append(f"{name}: {url}")
        if self.rerun:
            lines.append(f"rerun: {self.rerun.get('note') or ''}".rstrip())
            if self.rerun.get("command"):
                lines.append(f"  {self.rerun['command']}")
        return "\n".join(lines)

    def html(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in self.numbers.items())
        links = "".join(f'<li><a href="{html.escape(u)}">{html.escape(k)}</a></li>' for k, u in self.links.items() if u)
        rerun = ""
        if self.rerun:
            rerun = (f"<p>Rerun: {html.escape(self.rerun.get('note') or '')}</p>"
                     f"<pre>{html.escape(self.rerun.get('command') or '')}</pre>")
        window = (f"<p>Window: [{html.escape(str(self.window.get('start')))}, "
                  f"{html.escape(str(self.window.get('end')))})</p>") if self.window else ""
        return (f"<h3>{html.escape(self.title)}</h3><p>{html.escape(self.summary)}</p>{window}"
                f"<table>{rows}</table><ul>{links}</ul>{rerun}")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def shell_command(argv: Sequence[str]) -> str:
    """``argv`` as one line to paste into a shell: every part quoted (``shlex.split`` gives ``argv`` back)."""
    return shlex.join(str(a) for a in argv)


def _trigger(dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    """The ``airflow dags trigger`` rerun of ``dag_id`` with ``conf``: its argv and the quoted command."""
    argv = ["airflow", "dags", "trigger", dag_id, "--conf", json.dumps(conf, default=str)]
    return {"argv": argv, "command": shell_command(argv)}


def _slack_text(text: str) -> str:
    """Slack reads ``<...>`` as mentions and links and ``&`` as an entity: escape the three, as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _window(context: Any) -> tuple[str, dict[str, str]]:
    """The day an alert is about and its window; runs without a data interval use their logical date / run."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        first, after = interval_days(context)
        return first.isoformat(), {"start": first.isoformat(), "end": after.isoformat()}
    moment = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
    day = moment.date().isoformat() if moment is not None else dt.date.today().isoformat()
    return day, {}


# --- delivery -----------------------------------------------------------------------------------------------


def _platform() -> PlatformConfig:
    from evergreen.config import get_config

    return get_config().platform


class EmailAlertNotifier(BaseNotifier):
    """One HTML e-mail through the SMTP provider's ``SmtpHook``; no field is a template (see the module doc)."""

    template_fields: Sequence[str] = ()

    def __init__(self, *, to: Sequence[str], subject: str, html_content: str, smtp_conn_id: str) -> None:
        super().__init__()
        self.to = list(to)
        self.subject = subject
        self.html_content = html_content
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Any) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as smtp:  # the sender comes from the Connection's from_email
            smtp.send_email_smtp(to=self.to, subject=self.subject, html_content=self.html_content)


class SlackAlertNotifier(BaseNotifier):
    """One message through the Slack provider's ``SlackWebhookHook``; no field is a template (see the module doc)."""

    template_fields: Sequence[str] = ()

    def __init__(self, *, text: str, slack_webhook_conn_id: str) -> None:
        super().__init__()
        self.text = text
        self.slack_webhook_conn_id = slack_webhook_conn_id

    def notify(self, context: Any) -> None:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        SlackWebhookHook(slack_webhook_conn_id=self.slack_webhook_conn_id).send(text=self.text)


def _notifier_for(destination: str, alert: Alert, platform: PlatformConfig) -> BaseNotifier:
    if destination == "email":
        if not platform.alert_emails:
            raise AlertDestinationError("destination 'email' needs platform.alert_emails (a list of addresses)")
        return EmailAlertNotifier(
            to=list(platform.alert_emails),
            smtp_conn_id=platform.smtp_conn_id or "smtp_default",
            subject="[evergreen] " + alert.title,
            html_content=alert.html(),
        )
    if destination == "slack":
        try:
            import airflow.providers.slack.hooks.slack_webhook  # noqa: F401
        except ImportError:
            raise AlertDestinationError(
                f"destination 'slack' needs the Slack provider, which is not installed; add {SLACK_PIN} to "
                "requirements.txt, or remove 'slack' from platform.alert_destinations"
            ) from None
        return SlackAlertNotifier(slack_webhook_conn_id=platform.slack_conn_id or "slack_default",
                                  text=_slack_text(alert.text()))
    raise AlertDestinationError(
        f"unknown alert destination '{destination}' in platform.alert_destinations; use log, email or slack"
    )


def _put(store: Store, alert: Alert, deliveries: dict[str, Any]) -> None:
    from evergreen.store.base import Record

    ts = dt.datetime.combine(dt.date.fromisoformat(alert.day), dt.time(), tzinfo=dt.timezone.utc)
    store.put_record(Record(ALERT_KIND, alert.key, alert.model, ts, {**alert.to_dict(), "deliveries": deliveries}))


def deliver(
    alert: Alert,
    context: Any = None,
    *,
    platform: PlatformConfig | None = None,
    store: Store | None = None,
) -> dict[str, dict[str, Any]]:
    """Send ``alert`` to the log, the store and every configured destination; never raises for a destination.

    Returns ``{destination: {"status": "sent" | "failed" | "already_sent", ...}}``.
    """
    platform = platform or _platform()
    log.warning("ALERT %s\n%s", alert.key, alert.text())
    deliveries: dict[str, dict[str, Any]] = {"log": {"status": "sent"}}
    previous: dict[str, Any] = {}
    if store is None:
        try:
            from evergreen.hooks.store import StoreHook

            store = StoreHook().get_conn()
        except Exception:  # the store may be what failed: the log line above is then the alert
            log.exception("alert %s: cannot open the store; the alert is in this log only", alert.key)
    if store is not None:
        try:
            existing = store.get_record(ALERT_KIND, alert.key)
            if existing is not None and existing.payload.get("fingerprint") == alert.fingerprint:
                previous = existing.payload.get("deliveries") or {}
            _put(store, alert, deliveries)
        except Exception:
            log.exception("alert %s: cannot write the alert record; the alert is in this log only", alert.key)
            store = None
    for destination in dict.fromkeys(platform.alert_destinations):
        if destination == "log":
            continue
        if (previous.get(destination) or {}).get("status") in ("sent", "already_sent"):
            deliveries[destination] = {"status": "already_sent"}
            log.info("alert %s: already sent to %s for the same content; not sending again", alert.key, destination)
            continue
        try:
            notifier = _notifier_for(destination, alert, platform)
            notifier(dict(context) if context is not None else {})
            deliveries[destination] = {"status": "sent"}
            log.info("alert %s: sent to %s", alert.key, destination)
        except Exception as exc:  # one broken destination must not hide the alert from the others
            log.error("alert %s: destination %s failed: %s: %s", alert.key, destination, type(exc).__name__, exc)
            deliveries[destination] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:1000]}
        if store is not None:
            try:
                _put(store, alert, deliveries)
            except Exception:
                log.exception("alert %s: cannot update the alert record", alert.key)
    return deliveries


# --- the two kinds of alert ---------------------------------------------------------------------------------


def signal_alert(
    *,
    model: str,
    signal: str,
    day: str,
    window: dict[str, str],
    summary: str,
    numbers: dict[str, Any],
    record_key: str,
    context: Any,
    mlflow_run_url: str | None = None,
    rerun: dict[str, Any] | None = None,
    platform: PlatformConfig | None = None,
) -> Alert:
    """The alert of a drift or decay signal (the retrain it feeds may decide not to run: name how to force it)."""
    platform = platform or _platform()
    source = airflow_info(context)
    links = {"airflow_run": airflow_run_url(platform.airflow_base_url, source["dag_id"], source["run_id"])
             if source["dag_id"] and source["run_id"] else None,
             "mlflow_run": mlflow_run_url}
    if rerun is None:
        conf = {"force": True}
        rerun = {
            "dag_id": f"retrain_{model}",
            "conf": conf,
            **_trigger(f"retrain_{model}", conf),
            "note": (f"retrain_{model} is triggered by this signal; if its policy declined (cooldown, too few new "
                     f"rows), trigger retrain_{model} with {{force: true}}"),
        }
    return Alert(model=model, signal=signal, day=day, title=f"{model}: {signal} on {day}", summary=summary,
                 window=window, numbers={**numbers, "record": record_key}, links=links, rerun=rerun, source=source)


def send_signal_alert(**kwargs: Any) -> dict[str, dict[str, Any]]:
    """Build a :func:`signal_alert` and :func:`deliver` it (used by the drift and decay signal tasks)."""
    alert = signal_alert(**kwargs)
    return deliver(alert, kwargs["context"], platform=kwargs.get("platform"))


def failure_alert(model_name: str, context: Any, platform: PlatformConfig | None = None) -> Alert:
    platform = platform or _platform()
    source = airflow_info(context)
    day, window = _window(context)
    dag_id, run_id, task_id = source["dag_id"] or "?", source["run_id"] or "?", source["task_id"] or "?"
    exc = context.get("exception")
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "the task failed (no exception in the context)"
    params = {k: v for k, v in dict(context.get("params") or {}).items()}
    logical = context.get("logical_date")
    if logical is not None:
        stamp = logical.isoformat()
        # the regex matches this task only: a task id's dots (task groups) are literal
        argv = ["airflow", "tasks", "clear", dag_id, "--task-regex", f"^{re.escape(task_id)}$",
                "--start-date", stamp, "--end-date", stamp, "--yes"]
        how = {"argv": argv, "command": shell_command(argv)}
        note = f"fix the cause, then clear task {task_id} of run {run_id} (Airflow UI: Clear) or run"
    else:
        how = _trigger(dag_id, params)
        note = f"fix the cause, then trigger {dag_id} again with the same Params {json.dumps(params, default=str)}"
    return Alert(
        model=model_name,
        signal="failure",
        day=day,
        title=f"{model_name}: task {dag_id}.{task_id} failed",
        summary=error[:2000],
        window=window,
        numbers={"dag_id": dag_id, "task_id": task_id, "try_number": source["try_number"],
                 "run_type": source["run_type"]},
        links={"airflow_run": airflow_run_url(platform.airflow_base_url, dag_id, run_id),
               "airflow_task": airflow_run_url(platform.airflow_base_url, dag_id, run_id, task_id,
                                               source["map_index"] if source["map_index"] is not None else -1)},
        rerun={"dag_id": dag_id, "params": params, **how, "note": note},
        source=source,
        key_suffix=f"{dag_id}/{task_id}",
    )


class FailureNotifier(BaseNotifier):
    """``on_failure_callback`` of every Evergreen task: one alert per failed task, never raises."""

    template_fields: Sequence[str] = ()  # the model name is config, not a template

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name

    def notify(self, context: Any) -> None:
        try:
            alert = failure_alert(self.model_name, context)
            deliver(alert, context)
        except Exception:  # a broken alert path must not mask the task's own failure
            log.exception("failure alert for model %s could not be built or sent", self.model_name)


def failure_notifier(model_name: str) -> FailureNotifier:
    return FailureNotifier(model_name)
