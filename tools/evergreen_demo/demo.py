"""The Evergreen demo on embedded defaults: ``python -m evergreen.demo`` (what ``make demo`` runs).

A small, fixed scenario for the first model in the config, run as a list of steps over one shared
:class:`Demo` context. Everything lives under ``EVERGREEN_HOME`` (default ``.evergreen/`` in the checkout); the
scenario is deterministic, so running the demo again leaves the same data, candidate and monitoring records; what
differs is what a re-run adds (a retrain decision per manual trigger, Airflow runs, run ids). The report ends with a
fingerprint of the deterministic parts, the same in any home.

Steps (``--list`` shows them, ``--steps a,b`` runs a subset):

1. ``airflow``     -- migrate Airflow's metadata DB (SQLite under the home) when it is new or Airflow changed;
2. ``predictions`` -- four days of scored requests logged in the store, as the serving app logs them (scored by
   the model in production before Evergreen, logged as version ``legacy``: it is not in the registry);
3. ``land``        -- the outcome files a source system exports for those days, landed in the landing zone: one
   day with deliberately bad rows of several kinds, a history export carrying its own features, a Parquet file;
4. ``ingest``      -- ``ingest_feedback_<model>`` run through Airflow's ``dag.test()`` for each landing day (each
   run's Airflow output is kept in a log file under ``$EVERGREEN_HOME/demo-logs``);
5. ``retrain``     -- ``retrain_<model>`` triggered by hand with Params (the training window = the landed days), as
   from the UI's *Trigger DAG w/ config*: with nothing registered this is the bootstrap -- the Kubeflow training
   pipeline runs through ``kfp.local`` and registers a candidate version in MLflow; on a re-run the retrain policy
   decides again (inside ``retrain.cooldown_hours`` it refuses) and the decision is recorded either way;
6. ``monitor``     -- ``monitor_drift_<model>`` and ``evaluate_performance_<model>`` for the last prediction day;
   with no champion (only the promotion gate, the next piece, sets that alias) they record "cannot judge" and why;
7. ``report``      -- one summary: ingestion (what landed, what was quarantined and why), the retrain decision and
   the candidate, the monitoring verdicts, and the state fingerprint.

Later work adds its steps (promotion, A/B test) by appending to :data:`STEPS`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.airflow_env import airflow_env
from evergreen.paths import home

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.config import ModelConfig
    from evergreen.store.base import Record, Store

#: the scenario's prediction days; their outcomes land the day after each (the landing days)
FIRST_DAY = dt.date(2026, 11, 2)
DAYS = 4
ROWS_PER_DAY = 1000
#: the version label the demo's traffic is logged with: the model in production before Evergreen, which is not in
#: the registry -- logging it as "1" would pair its live metric with the baseline of the registry's version 1, the
#: candidate this demo trains, which never served a request
SERVED_VERSION = "legacy"
#: the aliases only the promotion gate may move (the demo reads them, it never sets them)
ALIASES = ("champion", "challenger")


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


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


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
            # (named to sort after outcomes.csv: the first occurrence of a request id, by file name, wins)
            first = text.iloc[0]
            bad = pd.DataFrame(
                [
                    {rid: f"{model.name}-never-logged", ts: first[ts], label: "1"},  # no logged prediction
                    {rid: text.iloc[1][rid], ts: first[ts], label: "2"},  # not a class
                    {rid: text.iloc[2][rid], ts: first[ts], label: ""},  # no label
                    {rid: text.iloc[3][rid], ts: "yesterday", label: "0"},  # not a time
                    {rid: first[rid], ts: first[ts], label: str(1 - int(first[label]))},  # already landed
                    {rid: "", ts: first[ts], label: "1"},  # no request id
                ]
            )
            write(day, "resent-corrections.csv", bad)
            write(day, "export-v2.csv", text.iloc[4:7].assign(channel="web"))
            write(day, "empty.csv", text.iloc[:0])
    say(f"      {len(written)} files under {lake.landing_dir(model.name, '*').replace('dt=*', '')}:")
    for name in written:
        say(f"        {name}")


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

    from evergreen.retrain import KIND, record_key

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
    _print_decision(record)
    version = (record.payload.get("outcome") or {}).get("candidate_version")
    client = demo.registry()
    if version:
        say(f"      registered: '{model.name}' version {version} in {demo.registry_description}")
        _print_version(client, model, version)
    else:
        latest = _latest_candidate(client, model.name)
        if latest is not None:
            say(f"      no new version; the newest candidate is still version {latest.version} "
                f"(window {latest.tags.get('evergreen.training_window')}, Airflow run "
                f"{latest.tags.get('evergreen.airflow_run_id')})")
    _print_aliases(client, model.name)


def _print_decision(record: Record) -> None:
    p = record.payload
    d = p.get("details") or {}
    verdict = "RETRAIN" if p["retrain"] else "NO RETRAIN"
    say(f"      decision {record.kind} {record.key}: {verdict} (reason '{p['reason']}')")
    say(f"        {p['message']}")
    facts = [f"window {p['window']}", f"{d.get('new_rows')} new labelled rows since {d.get('new_rows_since')} "
             f"(min_new_rows {d.get('min_new_rows')})", f"cooldown {d.get('cooldown_hours'):g} h"]
    if d.get("last_retrain_at"):
        facts.append(f"last retrain {d['last_retrain_at']} ({d.get('hours_since_last_retrain')} h ago)")
    facts.append(f"champion {d.get('champion_version') or 'none'}, latest version {d.get('latest_version') or 'none'}")
    say(f"        facts: {'; '.join(facts)}")
    outcome = p.get("outcome")
    if outcome:
        say(f"        outcome: candidate version {outcome.get('candidate_version') or 'none'} from Kubeflow run "
            f"{outcome.get('kfp_run_id')} ({outcome.get('kfp_mode')})")


def _metric_tags(model: ModelConfig, tags: dict[str, str]) -> tuple[float, float, float] | None:
    m = f"evergreen.metric.{model.metric}"
    try:
        return float(tags[m]), float(tags[f"{m}_ci_low"]), float(tags[f"{m}_ci_high"])
    except (KeyError, ValueError):
        return None


def _print_version(client: MlflowClient, model: ModelConfig, version: str) -> None:
    mv = client.get_model_version(model.name, version)
    tags = dict(mv.tags or {})
    run = client.get_run(mv.run_id)
    metrics = run.data.metrics
    m = model.metric
    say(f"        holdout {m} {metrics[f'holdout_{m}']:.4f} (95% CI {metrics[f'holdout_{m}_ci_low']:.4f} .. "
        f"{metrics[f'holdout_{m}_ci_high']:.4f}) on {tags.get('evergreen.holdout_rows')} holdout rows, trained on "
        f"{tags.get('evergreen.training_rows')} rows; sanity floor {model.training.sanity_floor}")
    say(f"        MLflow run {mv.run_id} (experiment evergreen/{model.name}/training), model {mv.source}")
    say("        lineage tags:")
    for key in ("status", "airflow_dag_id", "airflow_run_id", "kfp_run_id", "training_window", "data_fingerprint",
                "holdout_uri", f"metric.{m}", "estimator", "hyperparameters"):
        say(f"          evergreen.{key} = {tags.get(f'evergreen.{key}', '(missing)')}")


def _versions(client: MlflowClient, model: str) -> list[Any]:
    return sorted(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))


def _latest_candidate(client: MlflowClient, model: str) -> Any | None:
    candidates = [v for v in _versions(client, model) if (v.tags or {}).get("evergreen.status") == "candidate"]
    return candidates[-1] if candidates else None


def _aliases(client: MlflowClient, model: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":  # nothing registered yet
            return {}
        raise
    return {k: str(v) for k, v in (registered.aliases or {}).items()}


def _print_aliases(client: MlflowClient, model: str) -> None:
    aliases = _aliases(client, model)
    shown = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
    waits = "; the candidate waits for it" if _latest_candidate(client, model) is not None else ""
    say(f"      registry aliases of '{model}': {shown} -- only the promotion gate (the next piece) moves "
        f"{' / '.join(repr(a) for a in ALIASES)}{waits}")


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
        _print_monitoring(model, record, detail=True)
    client = demo.registry()
    candidate = _latest_candidate(client, model.name)
    if candidate is not None and "champion" not in _aliases(client, model.name):
        say(f"      candidate version {candidate.version} waits for the promotion gate (next issue); until a version "
            "holds the 'champion' alias there is no reference to measure drift against and no offline baseline to "
            "compare the live metric with, so both records say 'cannot judge' -- recorded, with the reason")


def _print_monitoring(model: ModelConfig, record: Record, *, detail: bool) -> None:
    p = record.payload
    say(f"      {record.kind} {record.key}: {p['status']} -- {p.get('reason') or '-'}")
    if not detail:
        return
    where = f"MLflow run {p['mlflow']['run_id']} (experiment evergreen/{model.name}/monitoring)"
    if record.kind == "drift":
        reference = p.get("reference") or {}
        against = (f"the reference of version {reference['version']} ({reference.get('n_rows')} rows)"
                   if reference.get("version") else "no reference")
        say(f"        window {p['window']['start']}/{p['window']['end']}: {p.get('n_current')} logged rows against "
            f"{against}; {where}")
        return
    say(f"        predictions {p['window']['start']}/{p['window']['end']}: {p['n_predictions']} logged, "
        f"{p['n_labelled']} labelled, {p['n_usable']} usable; {where}")
    groups = p.get("groups") or []
    whole = next((g for g in groups if g["by"] == "all"), None)
    if whole is not None and whole.get("estimate"):
        est = whole["estimate"]
        say(f"        live {model.metric} of the window: {est['value']:.4f} ({est['ci_low']:.4f} .. "
            f"{est['ci_high']:.4f}, {est['method']}) on {whole['n_usable']} rows"
            + (" -- recorded; with no champion there is no offline baseline to judge it against"
               if p.get("champion_version") is None else ""))
    served = {by: ", ".join(f"{g['value']} ({g['n_predictions']})" for g in groups if g["by"] == by)
              for by in ("version", "arm")}
    say(f"        served by version: {served['version'] or '-'}; arm: {served['arm'] or '-'}")


@step("report")
def report(demo: Demo) -> None:
    """One summary: ingestion, the retrain decision and candidate, the monitoring verdicts, the state fingerprint."""
    import pandas as pd

    from evergreen.ingest import RECORD_KIND

    model = demo.model
    say("      ingestion")
    say(f"      {'day':<11} {'files':>5} {'empty':>5} {'rows':>6} {'landed':>6} {'quarantined':>11} "
        f"{'unmatched':>9}  reasons")
    quarantines = []
    for day in demo.landing_days:
        record = demo.store.get_record(RECORD_KIND, f"{model.name}/{day}")
        if record is None:
            say(f"      {day}  (not ingested)")
            continue
        p = record.payload
        reasons = ", ".join(f"{k}={v}" for k, v in p["reasons"].items()) or "-"
        say(f"      {str(day):<11} {len(p['files']):>5} {len(p['empty_files']):>5} {p['rows_read']:>6} "
            f"{p['landed']:>6} {p['quarantined']:>11} {p['unmatched']:>9}  {reasons}")
        if p["quarantined"]:
            q = lake.read_parquet(p["quarantine_uri"])
            quarantines.append((day, p["quarantine_uri"], q))
    for day, uri, q in quarantines:
        say(f"\n      quarantined on {day} ({uri}):")
        # rows of one file sharing a reason (a whole file quarantined for a column) are shown once
        for (source, code, reason), rows in q.groupby(["source_file", "reason_code", "reason"], sort=False):
            numbers = rows["row_number"].tolist()
            where = f"row {numbers[0]}" if len(numbers) == 1 else f"rows {', '.join(map(str, numbers))}"
            reason = reason if len(reason) <= 400 else reason[:397] + "..."
            say(f"        {source.rsplit('/', 1)[-1]} {where} [{code}] {reason}")
    labelled = [lake.read_parquet(lake.labelled_path(model.name, d)) for d in demo.landing_days
                if lake.exists(lake.labelled_path(model.name, d))]
    if labelled:
        frame = pd.concat(labelled, ignore_index=True)
        say(f"\n      labelled examples in the lake: {len(frame)} rows "
            f"({', '.join(f'{k}={v}' for k, v in frame['source'].value_counts().sort_index().items())}) under "
            f"{lake.partition_dir(model.name, 'labelled', '*').replace('dt=*', '')}")

    say("\n      retraining")
    _report_retrain(demo)
    say("\n      monitoring")
    for kind in ("drift", "performance"):
        record = demo.store.get_record(kind, f"{model.name}/{demo.last_day}")
        if record is None:
            say(f"      {kind} {model.name}/{demo.last_day}: not run")
        else:
            _print_monitoring(model, record, detail=False)

    fingerprint = state_fingerprint(demo)
    say(f"\n      state fingerprint: {fingerprint}")
    say("        covers: store outcomes, predictions and ingestion records; lake partitions; the candidate's training "
        "window, data fingerprint, holdout metric and hyper-parameters; the drift and performance records")
    say("        leaves out what differs from run to run: the retrain decision records (one per manual trigger, timed "
        "by the wall clock), version numbers, Airflow, Kubeflow and MLflow run ids and times; paths are written as "
        "<home>, <lake>, <landing>, <checkout>")
    demo.notes["fingerprint"] = fingerprint


def _report_retrain(demo: Demo) -> None:
    from evergreen.retrain import KIND

    model = demo.model
    decisions = sorted(demo.store.list_records(KIND, model.name), key=lambda r: (r.ts, r.key))
    if not decisions:
        say("      no retrain decision recorded yet")
        return
    # this demo run's decision when it ran the retrain step, else the newest one
    mine = next((r for r in decisions if r.key == demo.notes.get("decision_key")), None)
    p = (mine or decisions[-1]).payload
    which = "this run's decision" if mine else "latest decision"
    say(f"      {which}: {'RETRAIN' if p['retrain'] else 'NO RETRAIN'} ({p['reason']}): {p['message']}")
    history = ", ".join(r.payload["reason"] + ("" if r.payload["retrain"] else " (refused)") for r in decisions)
    say(f"      decisions recorded for '{model.name}': {len(decisions)} ({history})")
    client = demo.registry()
    candidate = _latest_candidate(client, model.name)
    if candidate is None:
        say("      no candidate version registered")
        return
    metric = _metric_tags(model, dict(candidate.tags or {}))
    shown = f"holdout {model.metric} {metric[0]:.4f} ({metric[1]:.4f} .. {metric[2]:.4f})" if metric else ""
    say(f"      candidate: '{model.name}' version {candidate.version}, window "
        f"{candidate.tags.get('evergreen.training_window')}, {shown}; registered by Airflow run "
        f"{candidate.tags.get('evergreen.airflow_run_id')}")
    aliases = _aliases(client, model.name)
    say(f"      aliases: {', '.join(f'{a} -> {v}' for a, v in sorted(aliases.items())) or 'none'} -- the candidate "
        "waits for the promotion gate (next issue)")


#: version tags that depend only on the data, the config and the code (not on run ids, paths or times)
_DETERMINISTIC_TAGS = ("status", "training_window", "data_fingerprint", "holdout_rows", "training_rows", "estimator",
                       "hyperparameters")


def state_fingerprint(demo: Demo) -> str:
    """16 hex digits of :func:`state_digest`: the same scenario gives the same fingerprint in any home."""
    text = json.dumps(state_digest(demo), sort_keys=True, default=str)
    return hashlib.sha256(_placeholders(text).encode()).hexdigest()[:16]


def _placeholders(text: str) -> str:
    """``text`` with the locations of this install (lake, landing zone, home, checkout) as placeholders: quarantine
    reasons and ingestion records name the files they came from, which is right for people but not for a
    fingerprint meant to be the same in every home."""
    from evergreen.paths import REPO_ROOT, lake_uri, landing_uri

    # most specific first: the default home (and the lake and landing zone in it) lies inside the checkout
    for root, name in ((lake_uri(), "<lake>"), (landing_uri(), "<landing>"), (str(home().root), "<home>"),
                       (str(REPO_ROOT), "<checkout>")):
        text = text.replace(root.rstrip("/"), name)
    return text


def state_digest(demo: Demo) -> dict[str, Any]:
    """The deterministic part of the demo's state, canonical for hashing: ingestion's own digest (its records and
    quarantine partitions re-hashed with :func:`_placeholders`: they name files), the newest candidate's content, and
    the monitoring records without their run ids."""
    from evergreen.ingest import RECORD_KIND, frame_digest
    from evergreen.ingest import state_digest as ingestion_digest

    model = demo.model
    digest: dict[str, Any] = dict(ingestion_digest(demo.store, model.name, demo.landing_days))
    records = [[r.key, r.ts.isoformat(), r.payload] for r in demo.store.list_records(RECORD_KIND, model.name)]
    digest[f"store/records/{RECORD_KIND}"] = {
        "rows": len(records),
        "sha256": hashlib.sha256(_placeholders(json.dumps(records, sort_keys=True, default=str)).encode()).hexdigest(),
    }
    for key in [k for k in digest if k.startswith("lake/quarantine/dt=")]:
        day, name = key.removeprefix("lake/quarantine/dt=").split("/", 1)
        frame = lake.read_parquet(f"{lake.partition_dir(model.name, 'quarantine', day)}/{name}")
        for column in frame.columns[frame.dtypes == object]:
            frame[column] = frame[column].map(lambda v: _placeholders(v) if isinstance(v, str) else v)
        digest[key] = {**digest[key], **frame_digest(frame)}
    candidate = _latest_candidate(demo.registry(), model.name)
    if candidate is not None:
        tags = dict(candidate.tags or {})
        digest["mlflow/candidate"] = {
            **{k: tags.get(f"evergreen.{k}") for k in _DETERMINISTIC_TAGS},
            **{k: v for k, v in tags.items() if k.startswith("evergreen.metric.")},
        }
    for kind in ("drift", "performance"):
        record = demo.store.get_record(kind, f"{model.name}/{demo.last_day}")
        if record is not None:
            payload = {k: v for k, v in record.payload.items() if k not in ("mlflow", "airflow")}
            digest[f"store/records/{kind}/{record.key}"] = [record.ts.isoformat(), payload]
    return digest


# --- entry point ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evergreen.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model to run the scenario for (default: the first declared)")
    parser.add_argument("--steps", default=None, help="comma-separated step names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the steps and exit")
    args = parser.parse_args(argv)
    if args.list:
        for i, s in enumerate(STEPS, 1):
            say(f"{i}. {s.name:<12} {s.doc}")
        return 0
    wanted = [s.strip() for s in args.steps.split(",")] if args.steps else [s.name for s in STEPS]
    unknown = sorted(set(wanted) - {s.name for s in STEPS})
    if unknown:
        say(f"unknown step(s) {', '.join(unknown)}; steps: {', '.join(s.name for s in STEPS)}")
        return 2

    from evergreen.config import get_config
    from evergreen.store.base import open_store

    env = {**os.environ, **airflow_env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Airflow reads its configuration once, when first imported -- by any step (a DAG run, a hook, or a platform
    # module importing the SDK): the embedded environment is in place before the first step, whichever runs first.
    os.environ.update(env)
    config = get_config()
    model = config.model(args.model) if args.model else next(iter(config.models.values()))
    h = home()
    h.root.mkdir(parents=True, exist_ok=True)
    say(f"Evergreen demo: model '{model.name}', home {h.root} (delete it to start over)")
    started = time.monotonic()
    with open_store(h.store_uri) as store:
        demo = Demo(model=model, store=store, env=env)
        selected = [s for s in STEPS if s.name in wanted]
        for i, s in enumerate(selected, 1):
            say(f"[{i}/{len(selected)}] {s.name}: {s.doc}")
            try:
                s.run(demo)
            except DemoError as exc:
                say(f"demo stopped: {exc}")
                return 1
    say(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
