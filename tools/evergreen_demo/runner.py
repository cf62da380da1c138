"""What the demo's steps share: the :class:`Demo` context, the scenario's constants, and running Airflow quietly.

Every step is a function of one :class:`Demo` (:mod:`evergreen_demo.steps`). Airflow's and the pipeline's output
goes to log files under ``$EVERGREEN_HOME/demo-logs``: the terminal shows only the demo's own report (:func:`say`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import tracking
from evergreen.paths import home

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.config import ModelConfig
    from evergreen.store.base import Store

#: the scenario's prediction days; their outcomes land the day after each (the landing days)
FIRST_DAY = dt.date(2026, 11, 2)
DAYS = 4
ROWS_PER_DAY = 1000
#: the version label the demo's traffic is logged with: the model in production before Evergreen, which is not in
#: the registry -- logging it as "1" would pair its live metric with the baseline of the registry's version 1, the
#: candidate this demo trains, which never served a request
SERVED_VERSION = "legacy"


def say(text: str = "") -> None:
    """The demo's report goes to stdout (it is the program's output, not a log)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Demo:
    """What the steps share."""

    model: ModelConfig
    store: Store
    days: int = DAYS
    rows: int = ROWS_PER_DAY
    env: dict[str, str] = field(default_factory=dict)  # the environment Airflow subprocesses run in
    notes: dict[str, Any] = field(default_factory=dict)  # results steps hand to later steps
    _dagbag: Any = None

    @property
    def prediction_days(self) -> list[dt.date]:
        return [FIRST_DAY + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def landing_days(self) -> list[dt.date]:
        return [d + dt.timedelta(days=1) for d in self.prediction_days]

    @property
    def training_window(self) -> tuple[dt.date, dt.date]:
        """The retrain's window ``[start, end)`` of lake days: every landed day of the scenario."""
        return self.landing_days[0], self.landing_days[-1] + dt.timedelta(days=1)

    @property
    def last_day(self) -> dt.date:
        """The last prediction day: the day the monitoring step judges."""
        return self.prediction_days[-1]

    @property
    def logs(self) -> Path:
        return home().root / "demo-logs"

    def airflow(self, *args: str, log: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the ``airflow`` CLI of this interpreter's environment; its output goes to ``log`` when given."""
        cmd = [str(Path(sys.executable).parent / "airflow"), *args]
        if log is None:
            return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            return subprocess.run(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, text=True, timeout=timeout)

    def dag(self, dag_id: str) -> Any:
        """A DAG of the project's dags/ folder, parsed once per demo run (the parse output goes to a log)."""
        if self._dagbag is None:
            with _output_to(self.logs / "dagbag.log"):
                from airflow.dag_processing.dagbag import DagBag

                self._dagbag = DagBag(dag_folder=self.env["AIRFLOW__CORE__DAGS_FOLDER"])
        dag = self._dagbag.get_dag(dag_id)
        if dag is None:
            raise DemoError(f"DAG {dag_id} did not load: {self._dagbag.import_errors or 'not found'}; "
                            f"see {self.logs / 'dagbag.log'}")
        return dag

    def run_dag(self, dag_id: str, logical_date: Any, what: str, *, log_name: str, conf: dict | None = None,
                run_after: Any = None) -> Any:
        """One run of ``dag_id`` through Airflow's ``dag.test()``, its output in a log file; the finished DagRun.

        A failed run stops the demo with the log's path. ``what`` says what the run is for, in the progress line.
        """
        import copy

        dag = self.dag(dag_id)
        log = self.logs / f"{log_name}.log"
        # Param.resolve() keeps a run's conf on the DAG object: restore the declared Params after the run.
        params = copy.deepcopy(dag.params)
        started = time.monotonic()
        try:
            with _output_to(log):
                run = dag.test(logical_date=logical_date, run_after=run_after, run_conf=conf)
        finally:
            dag.params = params
        state = _value(run.state)
        states = {ti.task_id: _value(ti.state) for ti in run.get_task_instances()}
        tasks = ", ".join(f"{task_id}={states.get(task_id, 'none')}" for task_id in dag.task_ids)  # definition order
        say(f"      {dag_id} {what}: {state} in {time.monotonic() - started:.0f}s ({tasks}; log: {log})")
        if state != "success":
            raise DemoError(f"{dag_id} failed {what}{_last_error(log)}; see {log}")
        return run

    def registry(self) -> MlflowClient:
        """The MLflow client the DAGs use (the ``mlflow_default`` Connection, else the embedded SQLite store)."""
        return self._mlflow.get_conn()

    @property
    def registry_description(self) -> str:
        uri = self._mlflow.tracking_uri
        # a remote URI may carry the Connection's credentials: never print it
        return uri if uri.startswith("sqlite:") else "the MLflow of the mlflow_default Connection"

    @property
    def _mlflow(self) -> Any:
        if "mlflow_hook" not in self.notes:
            from evergreen.hooks.mlflow import MlflowHook

            self.notes["mlflow_hook"] = MlflowHook()
        return self.notes["mlflow_hook"]


def _value(state: Any) -> str:
    return str(getattr(state, "value", state))


def _last_error(log: Path) -> str:
    """The last error line of a run's log (the task's own message names what is wrong), for the stop message."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found = [line.strip() for line in lines if "Exception:" in line or "Error:" in line]
    return f" ({found[-1][:500]})" if found else ""


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so Airflow's own handlers too) to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def latest_candidate(client: MlflowClient, model: str) -> Any | None:
    """The newest version of ``model`` tagged as a candidate (the one the retrain step registered), or None."""
    candidates = [v for v in tracking.versions(client, model)
                  if (v.tags or {}).get(f"{tracking.TAG}status") == "candidate"]
    return candidates[-1] if candidates else None
