"""Run operators inside real DAG runs (``dag.test()``) with DAGs built in the test itself."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from dag_helpers import START

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory) -> dict[str, str]:
    """The tiny test pipelines compiled once to KFP IR YAML."""
    sys.path.insert(0, str(HERE))
    import tiny_pipeline

    return tiny_pipeline.compile_all(tmp_path_factory.mktemp("packages"))


@pytest.fixture
def run_test_dag(airflow_db):
    """Serialize a DAG object built in a test (``dag.test()`` only runs serialized DAGs) and run it once.

    ``when`` is both the logical date and ``run_after``, so the run id (``manual__<when>``) is known in advance.
    """

    def _run(dag, when: dt.datetime = START, conf: dict | None = None):
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.dag_processing.collection import update_dag_parsing_results_in_db
        from airflow.serialization.serialized_objects import LazyDeserializedDAG
        from airflow.utils.session import create_session

        DagBundlesManager().sync_bundles_to_db()
        with create_session() as session:
            update_dag_parsing_results_in_db(
                "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
            )
        return dag.test(logical_date=when, run_after=when, run_conf=conf)

    return _run
