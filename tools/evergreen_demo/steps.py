"""The demo scenario's steps, in the order they run (``python -m evergreen_demo --list`` shows them).

Each step does what a user or a source system would: log traffic, land outcome files, trigger the project's DAGs
through Airflow's ``dag.test()``; then prints what the platform recorded (:mod:`evergreen_demo.report`). The
scenario is fixed, so a re-run leaves the same state; later work adds its steps (promotion, A/B test) here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evergreen import lake, tracking
from evergreen_demo.report import print_aliases, print_decision, print_monitoring, print_version, summary
from evergreen_demo.runner import SERVED_VERSION, Demo, DemoError, latest_candidate, say

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Demo], None]
    doc: str


STEPS: list[Step] = []


def step(name: str) -> Callable[[Callable[[Demo], None]], Callable[[Demo], None]]:
    """Register a demo step (in definition order); its docstring's first line is its description."""

    def register(fn: Callable[[Demo], None]) -> Callable[[Demo], None]:
        STEPS.append(Step(name, fn, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""))
        return fn

    return register


# --- steps --------------------------------------------------------------------------------------------------------


@step("airflow")
def prepare_airflow(demo: Demo) -> None:
    """Migrate Airflow's metadata DB when it is new or Airflow's version changed."""
    from importlib.metadata import version

    airflow_home = Path(demo.env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    stamp = airflow_home / ".evergreen-db-migrated"
    wanted = version("apache-airflow")
    if stamp.exists() and stamp.read_text().strip() == wanted and (airflow_home / "airflow.db").exists():
        say(f"      metadata DB {airflow_home / 'airflow.db'} is up to date (Airflow {wanted})")
        return
    log = demo.logs / "airflow-db-migrate.log"
    out = demo.airflow("db", "migrate", log=log)
    if out.returncode != 0:
        raise DemoError(f"`airflow db migrate` failed; see {log}")
    stamp.write_text(wanted)
    say(f"      migrated {airflow_home / 'airflow.db'} (Airflow {wanted}; log: {log})")


@step("predictions")
def log_predictions(demo: Demo) -> None:
    """Log the scenario's scored requests in the store, as the serving app does."""
    from evergreen_demo.simulate import simulate_day

    for day in demo.prediction_days:
        d = simulate_day(demo.model, day, demo.rows, model_version=SERVED_VERSION)
        demo.store.upsert_predictions(demo.model.name, d.predictions, demo.model.feature_names)
    say(f"      {demo.days} days x {demo.rows} predictions of '{demo.model.name}' "
        f"({demo.prediction_days[0]} .. {demo.prediction_days[-1]}) in {demo.store.description}, scored by the "
        f"model served before Evergreen (logged as version '{SERVED_VERSION}', not in the registry)")


@step("land")
def land_outcomes(demo: Demo) -> None:
    """Land the outcome files of those predictions, some of them deliberately wrong."""
    import pandas as pd

    from evergreen_demo.simulate import outcome_file_frame, simulate_day

    model = demo.model
    rid, ts, label = model.request_id, model.timestamp, model.label.name
    written: list[str] = []

    def write(day: dt.date, name: str, frame: pd.DataFrame) -> None:
        path = Path(lake.landing_dir(model.name, day)) / name
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        written.append(f"dt={day}/{name}")

    for pred_day, day in zip(demo.prediction_days, demo.landing_days):
        folder = Path(lake.landing_dir(model.name, day))
        # The demo owns these days' folders: start them clean so a re-run lands exactly the same files.
        lake.remove(str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        outcomes = outcome_file_frame(model, simulate_day(model, pred_day, demo.rows))
        if day == demo.landing_days[-1]:
            write(day, "outcomes.parquet", outcomes)  # typed columns, no text to parse
            continue
        text = outcomes.copy()
        text[ts] = text[ts].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        write(day, "outcomes.csv", text)
        if day == demo.landing_days[0]:
            # A history export from the source system: October's requests with their own features.
            history = outcome_file_frame(model, simulate_day(model, dt.date(2026, 10, 15), 300), with_features=True)
            numeric = next(f for f in model.features if f.type in ("int", "float") and f.max is not None)
            category = next(f for f in model.features if f.type == "category")
            history.loc[0, numeric.name] = numeric.max * 2  # out of range
            history.loc[1, category.name] = "gold"  # not a declared category
            write(day, "history-2026-10.csv", history)
        if day == demo.landing_days[1]:
            # A hand-made corrections file with one mistake of each kind, an export with an unexpected column, and
            # a file with only its header.
            # (named to sort after outcomes.csv: at the same outcome time, the later file wins)
            first = text.iloc[0]
            bad = pd.DataFrame(
                [
                    {rid: f"{model.name}-never-logged", ts: first[ts], label: "1"},  # no logged prediction
                    {rid: text.iloc[1][rid], ts: first[ts], label: "2"},  # not a class
                    {rid: text.iloc[2][rid], ts: first[ts], label: ""},  # no label
                    {rid: text.iloc[3][rid], ts: "yesterday", label: "0"},  # not a time
                    {rid: first[rid], ts: first[ts], label: str(first[label])},  # landed already, identical
                    {rid: text.iloc[8][rid], ts: text.iloc[8][ts], label: str(1 - int(text.iloc[8][label]))},  # a fix
                    {rid: "", ts: first[ts], label: "1"},  # no request id
                ]
            )
            write(day, "resent-corrections.csv", bad)
            write(day, "export-v2.csv", text.iloc[4:7].assign(channel="web"))
            write(day, "empty.csv", text.iloc[:0])
    say(f"      {len(written)} files under {lake.landing_dir(model.name, '*').replace('dt=*', '')}:")
    for name in written:
        say(f"        {name}")



@step("ingest")
def run_ingest(demo: Demo) -> None:
    """Run ingest_feedback through Airflow's dag.test() for each landing day."""
    import pendulum

    dag_id = f"ingest_feedback_{demo.model.name}"
    for day in demo.landing_days:
        demo.run_dag(dag_id, pendulum.instance(_tick(demo.model.schedules.ingest_feedback, day)), f"for {day}",
                     log_name=f"{dag_id}-{day}")


def _tick(cron: str, day: dt.date) -> dt.datetime:
    """The first tick of a daily cron on the day after ``day``: the scheduled run whose data interval is ``day``."""
    from croniter import croniter

    after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    return croniter(cron, after - dt.timedelta(microseconds=1)).get_next(dt.datetime)


@step("retrain")
def run_retrain(demo: Demo) -> None:
    """Trigger retrain_<model> by hand with Params; with nothing registered it bootstraps a candidate in MLflow."""
    import pendulum

    from evergreen.train.tasks import KIND, record_key

    model = demo.model
    dag_id = f"retrain_{model.name}"
    start, end = demo.training_window
    # Every Param, as the trigger form sends them: the window covers the landed history; the rest are the defaults.
    conf = {"force": False, "dry_run": False, "window_start": start.isoformat(), "window_end": end.isoformat(),
            "window_days": model.retrain.training_window_days, "hyperparameters": {}}
    # A manual trigger happens now: each demo run is a new DAG run (its own run id and decision record), and the
    # policy's cooldown is measured on the wall clock, as in production.
    now = pendulum.now("UTC").replace(microsecond=0)
    say(f"      trigger {dag_id} with Params {json.dumps(conf)}")
    run = demo.run_dag(dag_id, now, "(manual trigger)", conf=conf, run_after=now,
                       log_name=f"{dag_id}-{now:%Y%m%dT%H%M%S}")
    record = demo.store.get_record(KIND, record_key(model.name, run.run_id))
    if record is None:
        raise DemoError(f"{dag_id} recorded no decision for run {run.run_id}; see {demo.logs}")
    demo.notes["decision_key"] = record.key
    print_decision(record)
    version = (record.payload.get("outcome") or {}).get("candidate_version")
    client = demo.registry()
    if version:
        say(f"      registered: '{model.name}' version {version} in {demo.registry_description}")
        print_version(client, model, version)
    else:
        latest = latest_candidate(client, model.name)
        if latest is not None:
            say(f"      no new version; the newest candidate is still version {latest.version} "
                f"(window {latest.tags.get(tracking.TRAINING_WINDOW_TAG)}, Airflow run "
                f"{latest.tags.get('evergreen.airflow_run_id')})")
    print_aliases(client, model.name)



@step("monitor")
def run_monitoring(demo: Demo) -> None:
    """Run monitor_drift and evaluate_performance for the last prediction day through dag.test()."""
    import pendulum

    model = demo.model
    day = demo.last_day
    drift_dag, perf_dag = f"monitor_drift_{model.name}", f"evaluate_performance_{model.name}"
    # monitor_drift's run for interval [day, day + 1) reads that day's logged features; evaluate_performance's run
    # reads the predictions made label_delay_days before its interval ends, so it runs that much later.
    demo.run_dag(drift_dag, pendulum.instance(_tick(model.schedules.monitor_drift, day)), f"for {day}",
                 log_name=f"{drift_dag}-{day}")
    delay = dt.timedelta(days=model.performance.label_delay_days)
    demo.run_dag(perf_dag, pendulum.instance(_tick(model.schedules.evaluate_performance, day + delay)),
                 f"for the predictions of {day}", log_name=f"{perf_dag}-{day}")
    for kind in ("drift", "performance"):
        record = demo.store.get_record(kind, f"{model.name}/{day}")
        if record is None:
            raise DemoError(f"no {kind} record for {model.name}/{day}; see the logs under {demo.logs}")
        print_monitoring(model, record, detail=True)
    client = demo.registry()
    candidate = latest_candidate(client, model.name)
    if candidate is not None and tracking.CHAMPION not in tracking.aliases(client, model.name):
        say(f"      candidate version {candidate.version} waits for the promotion gate (promote_<model>, not run by "
            "this demo yet); until a version holds the 'champion' alias there is no reference to measure drift against and no offline baseline to "
            "compare the live metric with, so both records say 'cannot judge' -- recorded, with the reason")



@step("report")
def report(demo: Demo) -> None:
    """One summary: ingestion, the retrain decision and candidate, the monitoring verdicts, the state fingerprint."""
    summary(demo)
