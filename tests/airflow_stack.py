"""A throwaway Airflow (api-server + LocalExecutor scheduler) for the tests that need a real scheduler.

``dag.test()`` only makes manual runs; backfills need ``airflow backfill create`` and a scheduler. The tests that
do that (ingest_feedback's overlap test, the monitoring DAGs' backfill-safety test) share these helpers.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(evergreen_home: Path, dags_folder: Path, api_port: int) -> dict[str, str]:
    """The environment of an isolated Airflow: its own home and DB under ``evergreen_home``, only ``dags_folder``,
    cron scheduling off (only the runs a test creates exist)."""
    airflow_home = evergreen_home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "EVERGREEN_HOME": str(evergreen_home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def airflow(env: dict, *args: str, timeout: float = 240) -> str:
    """Run an ``airflow`` CLI command; fail the test with its output when it fails."""
    out = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"airflow {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def start(env: dict, api_port: int, logs: Path) -> list[subprocess.Popen]:
    """Start the api-server and the scheduler, each in its own process group, logging to ``logs``."""
    procs = []
    for name, args in (("api", ["api-server", "--host", "127.0.0.1", "--port", str(api_port)]),
                       ("scheduler", ["scheduler"])):
        out = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([AIRFLOW, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
