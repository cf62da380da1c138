"""What every generated DAG shares: default args (with the failure notifier), schedules, Asset names.

Imported by DAG files at parse time: only the Airflow SDK and the config, nothing heavy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable

from evergreen.config import ModelConfig
from evergreen.notifiers.alert import failure_notifier

OWNER = "evergreen"


def default_args(model: ModelConfig) -> dict[str, Any]:
    """Every task retries with exponential backoff; failures alert through the platform notifier."""
    args: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=10),
    }
    args["on_failure_callback"] = [failure_notifier(model.name)]
    return args


def daily(cron: str) -> CronDataIntervalTimetable:
    """A cron schedule whose runs each cover the interval since the previous tick (one day for a daily cron)."""
    return CronDataIntervalTimetable(cron, timezone="UTC")


def start_date(model: ModelConfig) -> dt.datetime:
    return dt.datetime.combine(model.start_date, dt.time(), tzinfo=dt.timezone.utc)


def end_date(model: ModelConfig) -> dt.datetime | None:
    """The ``end_date`` of the daily DAGs and of retrain's daily check: the end of the model's ``end_date`` day
    (None: no end). Airflow's scheduler stops creating scheduled runs after it; Asset events still start runs
    (the scheduler's Asset-triggered path does not read it), so retrain and promote keep reacting."""
    if model.end_date is None:
        return None
    return dt.datetime.combine(model.end_date, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)


def drift_asset(model: str) -> Asset:
    return Asset(name=f"evergreen_{model}_drift", uri=f"evergreen://{model}/drift", group="evergreen")


def decay_asset(model: str) -> Asset:
    return Asset(name=f"evergreen_{model}_decay", uri=f"evergreen://{model}/decay", group="evergreen")


def candidate_asset(model: str) -> Asset:
    return Asset(name=f"evergreen_{model}_candidate", uri=f"evergreen://{model}/candidate", group="evergreen")
