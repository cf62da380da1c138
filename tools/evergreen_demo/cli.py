"""The Evergreen demo on embedded defaults: ``python -m evergreen_demo`` (what ``make demo`` runs).

A month of production of the churn model (:mod:`evergreen_demo.month`), through a real Airflow (api-server and
LocalExecutor scheduler on the SQLite metadata DB under the home), the real scoring app, the embedded MLflow
registry and kfp.local pipelines. Everything lives under ``EVERGREEN_HOME`` (default ``.evergreen/``). It prints a
day-by-day timeline and writes ``$EVERGREEN_HOME/report/index.html``.

Running it again in the same home is safe: it reuses the metadata DB, the registry and every day that already ran
(says so), and only rewrites the report. Delete the home to replay the month from the start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import signal
import shutil
import sys
import time
from pathlib import Path

from evergreen.airflow_env import airflow_env
from evergreen.paths import REPO_ROOT, home
from evergreen_demo.runner import DemoError, say
from evergreen_demo.world import Scenario

MODEL_DAGS = ("ingest_feedback", "monitor_drift", "evaluate_performance", "ab_analysis", "retrain", "promote",
              "rollback")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evergreen_demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="churn", help="model to run the month for (default: churn)")
    parser.add_argument("--scenario", default=None,
                        help="JSON object of evergreen_demo.world.Scenario fields to change (the tests' short month)")
    parser.add_argument("--keep-running", action="store_true",
                        help="leave Airflow and the scoring app running at the end (stop them with Ctrl-C)")
    parser.add_argument("--ui", action="store_true",
                        help="open the month's history: the Airflow UI on :8080 and the MLflow UI on :5000 (no "
                             "scheduler: nothing new runs); what `make demo-ui` runs")
    args = parser.parse_args(argv)
    scenario = scenario_from(json.loads(args.scenario)) if args.scenario else Scenario()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminate)  # stop the children (finally blocks) on SIGTERM as on Ctrl-C
    try:
        if args.ui:
            return ui(scenario)
        return run(args.model, scenario, started, keep_running=args.keep_running)
    except DemoError as exc:
        say(f"demo stopped: {exc}")
        return 1
    except KeyboardInterrupt:
        say("demo interrupted: Airflow and the scoring app are stopped; run it again to go on from the last "
            "finished day")
        return 130


def scenario_from(changes: dict) -> Scenario:
    """A :class:`Scenario` with ``changes`` (JSON types: dates as ISO strings, tuples as lists)."""
    import datetime as dt

    base = Scenario()
    known = set(base.__dataclass_fields__)
    unknown = sorted(set(changes) - known)
    if unknown:
        raise DemoError(f"--scenario: unknown field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
    values = {k: getattr(base, k) for k in known} | changes
    if isinstance(values["first_day"], str):
        values["first_day"] = dt.date.fromisoformat(values["first_day"])
    values["backfill"] = tuple(values["backfill"])
    return Scenario(**values)


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the clean-up
    raise KeyboardInterrupt


def environment(root: Path, scenario: Scenario, api_port: int) -> dict[str, str]:
    from evergreen_demo.month import demo_config
    from evergreen_demo.stack import free_port

    env = {**os.environ, **airflow_env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["EVERGREEN_CONFIG_DIR"] = str(demo_config(root / "demo-config", scenario, REPO_ROOT / "include" / "config"))
    env["EVERGREEN_SIMULATED_CLOCK"] = str(root / "demo-clock")
    env.update({
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",  # the scheduler creates the Asset-triggered runs
        # A task's supervisor notices its process has exited at its next wake-up, at most this many seconds later
        # (default 5): most of the demo's tasks take a second or two, so the default would add half again.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # the scheduler's pause between loops when it has nothing to do (default 1 s): a queued run starts sooner
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
    })
    return env


def run(model_name: str, scenario: Scenario, started: float, *, keep_running: bool) -> int:
    from evergreen import clock
    from evergreen.store import open_store
    from evergreen_demo.stack import Airflow, Serving, free_port

    h = home()
    root = h.root
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "demo-logs"
    logs.mkdir(exist_ok=True)
    state_file = root / "demo-state.json"
    scenario_file = root / "demo-scenario.json"
    if scenario_file.exists() and json.loads(scenario_file.read_text()) != scenario.to_dict():
        raise DemoError(f"{root} holds a month of another scenario ({scenario_file}); delete the home to start over "
                        "or set EVERGREEN_HOME to another folder")
    import datetime as dt

    # The model's end_date (3 days after the month) is what keeps Airflow's scheduler from making runs of its own
    # for real dates, and `airflow backfill create` refuses future days: the month must lie in the past.
    if scenario.last_day + dt.timedelta(days=3) >= dt.datetime.now(dt.timezone.utc).date():
        raise DemoError(f"the scenario's month ends {scenario.last_day}: it must end at least 4 days before today "
                        "(set an earlier first_day in --scenario)")
    scenario_file.write_text(json.dumps(scenario.to_dict(), indent=1))
    api_port = free_port(8080)
    env = environment(root, scenario, api_port)
    os.environ.update(env)  # this process reads the same store, registry and config as the platform
    clock_file = Path(env["EVERGREEN_SIMULATED_CLOCK"])
    if not clock_file.exists():
        clock.set_simulated(clock_file, _start_moment(scenario))
    from evergreen.config import get_config

    model = get_config().model(model_name)
    say(f"Evergreen demo: {scenario.days} days of '{model.name}' from {scenario.first_day}, home {root} "
        "(delete it to start over)")
    reused = prepare_airflow(env, logs, model.name)
    for line in reused:
        say(f"  {line}")
    airflow = Airflow(env, logs, api_port)
    serving = Serving(model.name, env, logs, free_port(8000))
    procs_started = time.monotonic()
    try:  # whatever fails from here on, the finally stops every process started
        airflow.start()
        serving.start()
        say(f"  Airflow API server on {airflow.base} and the scheduler, the scoring app on {serving.base} "
            f"(started in {time.monotonic() - procs_started:.0f}s; logs under {logs})")
        from evergreen.hooks.mlflow import MlflowHook
        from evergreen_demo.month import Month

        with open_store(h.store_uri) as store:
            month = Month(model, store, airflow, serving, scenario, clock_file, MlflowHook().get_conn(),
                          state_file)
            done_before = len(month.state.get("days", {}))
            if done_before:
                say(f"  reusing the {done_before} day(s) that already ran in this home")
            days = month.play()
            from evergreen_demo.backfill import run_backfill

            backfill = run_backfill(month)
            from evergreen_demo.summary import build_report

            index = build_report(month, days, backfill, started_at=started)
            say(f"report: {index}")
            if keep_running:
                say(f"Airflow UI {airflow.base} (admin / {Path(env['AIRFLOW_HOME'])}/"
                    "simple_auth_manager_passwords.json.generated), scoring app "
                    f"{serving.base}; Ctrl-C stops them")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
    finally:
        serving.stop()
        airflow.stop()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"done in {(time.monotonic() - started) / 60:.1f} min (peak RSS: this process {own:.0f} MB, largest child "
        f"{peak:.0f} MB; bench/demo.py measures the whole process tree)")
    return 0


def ui(scenario: Scenario) -> int:
    """The Airflow UI (api-server only, no scheduler) and the MLflow UI on the demo's home, until Ctrl-C."""
    from evergreen_demo.stack import Airflow, Process, free_port, wait_for

    root = home().root
    if not (root / "demo-state.json").exists():
        raise DemoError(f"no demo has run in {root}; run `make demo` first")
    saved = json.loads((root / "demo-scenario.json").read_text())
    scenario = scenario_from(saved)
    port = free_port(8080)
    env = environment(root, scenario, port)
    logs = root / "demo-logs"
    airflow = Airflow(env, logs, port)
    mlflow_port = free_port(5000)
    mlflow = Process("the MLflow UI", [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                                       home().mlflow_tracking_uri, "--host", "127.0.0.1", "--port",
                                       str(mlflow_port)], env, logs / "mlflow-ui.log")
    try:
        airflow.procs = [Process("airflow api-server", [str(Path(sys.executable).parent / "airflow"), "api-server",
                                                        "--host", "127.0.0.1", "--port", str(port)], env,
                                 logs / "airflow-api-server-ui.log")]
        wait_for("Airflow's API server", airflow._healthy, 180, str(logs / "airflow-api-server-ui.log"), every=1)
        say(f"Airflow UI: {airflow.base} (user admin, password in {Path(env['AIRFLOW_HOME'])}/"
            "simple_auth_manager_passwords.json.generated); no scheduler runs, so the history stays as the demo "
            "left it")
        say(f"MLflow UI:  http://127.0.0.1:{mlflow_port} (the registry's versions and aliases, the training and "
            "monitoring runs, the Evidently drift reports as artifacts)")
        say(f"report:     {root / 'report' / 'index.html'}")
        if port != 8080 or mlflow_port != 5000:
            say("(the report's links assume ports 8080 and 5000, which were taken)")
        say("Ctrl-C stops both")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        airflow.stop()
        mlflow.stop()


def _wal(db: Path) -> None:
    """Put the SQLite metadata DB in write-ahead-log mode (it persists in the file). In the default rollback-journal
    mode a reader that wants to write and a writer waiting for readers block each other until the busy timeout: the
    API server, the scheduler and the task processes writing at once stall for a minute, and a task start times out.
    In WAL mode readers never block the writer."""
    import sqlite3

    with sqlite3.connect(db, timeout=60) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise DemoError(f"could not switch {db} to WAL mode (got {mode}); is another process holding it?")


def _start_moment(scenario: Scenario):
    import datetime as dt

    return dt.datetime.combine(scenario.first_day, dt.time(), tzinfo=dt.timezone.utc)


def prepare_airflow(env: dict[str, str], logs: Path, model: str) -> list[str]:
    """Migrate the metadata DB when new (or Airflow changed), create the registry pool, serialize the DAGs and
    unpause the model's; what was reused, for the output."""
    import subprocess
    from importlib.metadata import version

    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).parent / "airflow")

    def cli(*args: str, log: str) -> None:
        out = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=600)
        (logs / f"{log}.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise DemoError(f"`airflow {' '.join(args[:2])}` failed; see {logs / f'{log}.log'}")

    notes = []
    stamp = airflow_home / ".evergreen-db-migrated"
    wanted = version("apache-airflow")
    if stamp.exists() and stamp.read_text().strip() == wanted and (airflow_home / "airflow.db").exists():
        notes.append(f"reused: the Airflow metadata DB {airflow_home / 'airflow.db'} (Airflow {wanted})")
    else:
        cli("db", "migrate", log="airflow-db-migrate")
        stamp.write_text(wanted)
        notes.append(f"created the Airflow metadata DB {airflow_home / 'airflow.db'} (Airflow {wanted})")
    _wal(airflow_home / "airflow.db")
    cli("pools", "set", "evergreen_registry", "1", "Evergreen registry moves, one at a time", log="airflow-pools")
    cli("dags", "reserialize", log="airflow-dags-reserialize")
    for kind in MODEL_DAGS:
        cli("dags", "unpause", f"{kind}_{model}", log=f"airflow-unpause-{kind}")
    if (home().mlflow / "mlflow.db").exists():
        notes.append(f"reused: the MLflow registry {home().mlflow / 'mlflow.db'}")
    if shutil.which("airflow", path=env["PATH"]) is None:
        raise DemoError("the venv's airflow is not on PATH")
    return notes
