"""Test session setup: a throwaway EVERGREEN_HOME, a real Airflow metadata DB (SQLite) inside it, and the
``mongomock://`` store scheme (tests/mongomock_store.py) for in-process MongoDB stores.

The environment is set at import time, before anything imports Airflow, because Airflow reads its
configuration once on import. The session runs in embedded mode (``EVERGREEN_EMBEDDED=1``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="evergreen-test-"))
if not os.environ.get("EVERGREEN_KEEP_TEST_HOME"):  # set it to inspect a failed run's state afterwards
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["EVERGREEN_HOME"] = str(_HOME)
for _key in ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "EVERGREEN_LAKE_URI", "EVERGREEN_LANDING_URI"):
    os.environ.pop(_key, None)

from evergreen.airflow_env import airflow_env  # noqa: E402

os.environ.update(airflow_env())
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
# Embedded mode for the whole session (airflow_env() sets it too, unless the shell already set it otherwise): hooks
# without a Connection use the embedded defaults. Tests of production behaviour switch it off with monkeypatch.
os.environ["EVERGREEN_EMBEDDED"] = "1"

import mongomock_store  # noqa: E402  (tests/ is on sys.path: pytest puts the rootdir conftest's folder there)

mongomock_store.register()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB for the session (only tests that run DAGs ask for it)."""
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    # Airflow 3.3's DagBag reads only the folder it is given (it has no include_examples argument any more).
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def run_dag(dagbag):
    """Run one DAG run through Airflow's ``dag.test()`` and return the finished DagRun.

    ``logical_date`` is the run's trigger time: a daily DAG's data interval is the last full cron interval
    before it (for a 01:00 cron and a noon ``logical_date`` on day D: ``[D-1 01:00, D 01:00)``).
    """

    def _run(dag_id: str, logical_date, conf: dict | None = None):
        import copy

        import pendulum

        dag = dagbag.get_dag(dag_id)
        assert dag is not None, f"DAG {dag_id} not found; import errors: {dagbag.import_errors}"
        if isinstance(logical_date, str):
            logical_date = pendulum.parse(logical_date)
        # Param.resolve() stores a run's conf value on the shared DAG object; restore the declared params so
        # one test's conf never leaks into the next run of the same DAG.
        params = copy.deepcopy(dag.params)
        try:
            return dag.test(logical_date=logical_date, run_conf=conf)
        finally:
            dag.params = params

    return _run
