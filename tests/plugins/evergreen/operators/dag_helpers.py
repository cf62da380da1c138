"""Helpers shared by the operator tests (imported by name: this folder is on sys.path under pytest)."""

from __future__ import annotations

import datetime as dt

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def xcom(dag_run, task_id: str, key: str = "return_value"):
    """An XCom value of a finished run, read from the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids=task_id, key=key)
            .with_only_columns(XComModel.value)
        ).first()
    return None if row is None else row[0]


def manual_run_id(when: dt.datetime) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.types import DagRunType

    return DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=when, run_after=when)
