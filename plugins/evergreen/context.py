"""Facts about the Airflow run a task body is in: its data interval, its type, who it is.

Pure reads of the task context (a mapping), so every stage, the notifier and the DAG wiring share one
definition. Nothing heavy: imported at DAG parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

RUN_BACKFILL = "backfill"
RUN_MANUAL = "manual"
RUN_SCHEDULED = "scheduled"
RUN_ASSET = "asset_triggered"


def interval_days(context: Any) -> tuple[dt.date, dt.date]:
    """The run's data interval as ``[first day, day after last)`` in UTC dates."""
    start = context["data_interval_start"]
    end = context["data_interval_end"]
    return start.date(), max(end.date(), start.date() + dt.timedelta(days=1))


def run_type(context: Any) -> str | None:
    """The DAG run's type as Airflow names it (``scheduled``, ``manual``, ``backfill``, ...), or None."""
    value = getattr(context.get("dag_run"), "run_type", None)
    return None if value is None else str(getattr(value, "value", value))


def is_backfill(context: Any) -> bool:
    """True for runs created by a backfill: they recompute facts but never signal, promote or retrain."""
    return run_type(context) == RUN_BACKFILL


def airflow_info(context: Any) -> dict[str, Any]:
    """Who this is: the DAG, run, task (and map index and try) of the task instance, and the run's type."""
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    return {
        "dag_id": getattr(ti, "dag_id", None) or getattr(run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(run, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "run_type": run_type(context),
    }
