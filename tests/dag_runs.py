"""What the DAG tests read back from a ``dag.test()`` run: its task states, a task's XCom, and a run as a backfill.

Shared by tests/dags/test_promote.py, test_promote_faults.py, test_ab_analysis.py, test_rollback.py and
test_retrain.py (tests/ is on sys.path, like airflow_stack)."""

from __future__ import annotations

from typing import Any


def states(run) -> dict[str, str]:
    """``{task_id: state}`` of a finished run."""
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def xcom(run, task_id: str) -> Any:
    """The return value ``task_id`` pushed in ``run``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.execute(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id,
                                                  key="return_value").with_only_columns(XComModel.value)).scalar()


def run_as_backfill(run_dag, dag_id: str, logical, conf: dict | None = None):
    """One ``dag.test()`` run with run type ``backfill`` (dag.test() makes manual runs; the type is set before any
    task starts)."""
    import pytest

    import airflow.models.dagrun as dagrun_module
    from airflow.utils.types import DagRunType

    real = dagrun_module.get_or_create_dagrun

    def as_backfill(*, session, **kwargs):
        dag_run = real(session=session, **kwargs)
        dag_run.run_type = DagRunType.BACKFILL_JOB
        session.commit()
        return dag_run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dagrun_module, "get_or_create_dagrun", as_backfill)
        return run_dag(dag_id, logical, conf=conf)
