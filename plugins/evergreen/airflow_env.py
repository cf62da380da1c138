"""The environment the embedded Airflow runs in: one place for tests, the demo and ``make airflow``.

``python -m evergreen.airflow_env`` prints it as shell ``export`` lines. Tuned for a 2-core machine: one DAG
parsing process, a small task parallelism, and no example DAGs. Values already set in the environment win, so a
user can override any of them.

It also switches on embedded mode (``EVERGREEN_EMBEDDED=1``, :func:`evergreen.paths.embedded_mode`): the hooks may
then use the embedded SQLite store, MLflow and kfp.local when their Connections are not defined. The production
image never calls this, so there a missing Connection is an error.
"""

from __future__ import annotations

import os
import shlex

from evergreen.paths import EMBEDDED_ENV, REPO_ROOT, home

# Connect args of the embedded Airflow's SQLite metadata DB (Airflow imports them by the path set below). The
# scheduler, the API server, task processes and a CLI such as `airflow backfill create` all write to one file;
# sqlite3's default 5 s busy timeout makes a writer fail with "database is locked" on a loaded 2-core machine.
SQLITE_CONNECT_ARGS = {"timeout": 60}


def airflow_env() -> dict[str, str]:
    h = home()
    env = {
        "EVERGREEN_HOME": str(h.root),
        EMBEDDED_ENV: "1",
        "AIRFLOW_HOME": str(h.airflow),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # The UI of a development box is for its own user: loopback only (Airflow's default is 0.0.0.0).
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "2",
        # Airflow 3 moved the parsing options to [dag_processor]; the old [core]/[scheduler] names only warn or
        # are ignored. One parsing process leaves the second core to the scheduler and the running tasks.
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "60",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{h.airflow / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "evergreen.airflow_env.SQLITE_CONNECT_ARGS",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # MLflow 3.17 saves sklearn models with skops; the platform never unpickles a model it did not make.
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    }
    return {k: os.environ.get(k, v) for k, v in env.items()}


def main() -> None:
    for key, value in airflow_env().items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
