"""The Evergreen demo on embedded defaults: ``python -m evergreen.demo`` (what ``make demo`` runs).

A small, fixed scenario for the first model in the config, run as a list of steps over one shared
:class:`Demo` context. Everything lives under ``EVERGREEN_HOME`` (default ``.evergreen/`` in the checkout); the
scenario is deterministic, so running the demo again leaves the same state (the last line prints its fingerprint).

Steps (``--list`` shows them, ``--steps a,b`` runs a subset):

1. ``airflow``     -- migrate Airflow's metadata DB (SQLite under the home) when it is new or Airflow changed;
2. ``predictions`` -- four days of scored requests logged in the store, as the serving app logs them;
3. ``land``        -- the outcome files a source system exports for those days, landed in the landing zone: one
   day with deliberately bad rows of several kinds, a history export carrying its own features, a Parquet file;
4. ``ingest``      -- ``ingest_feedback_<model>`` run through Airflow's ``dag.test()`` for each landing day (each
   run's Airflow output is kept in a log file under the home);
5. ``report``      -- what landed, what was quarantined and why, from the ingestion records and quarantine files.

Later work adds its steps (monitoring, retraining) by appending to :data:`STEPS`.
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
    from evergreen.config import ModelConfig
    from evergreen.store.base import Store

#: the scenario's prediction days; their outcomes land the day after each (the landing days)
FIRST_DAY = dt.date(2026, 11, 2)
DAYS = 4
ROWS_PER_DAY = 1000


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

    @property
    def prediction_days(self) -> list[dt.date]:
        return [FIRST_DAY + dt.timedelta(days=i) for i in range(self.days)]

    @property
    def landing_days(self) -> list[dt.date]:
        return [d + dt.timedelta(days=1) for d in self.prediction_days]

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
    from evergreen.simulate import simulate_day

    for day in demo.prediction_days:
        d = simulate_day(demo.model, day, demo.rows)
        demo.store.upsert_predictions(demo.model.name, d.predictions, demo.model.feature_names)
    say(f"      {demo.days} days x {demo.rows} predictions of '{demo.model.name}' "
        f"({demo.prediction_days[0]} .. {demo.prediction_days[-1]}) in {demo.store.description}")


@step("land")
def land_outcomes(demo: Demo) -> None:
    """Land the outcome files of those predictions, some of them deliberately wrong."""
    import pandas as pd

    from evergreen.simulate import outcome_file_frame, simulate_day

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
    # Airflow reads its configuration when first imported: the embedded environment must be in place before.
    os.environ.update(demo.env)
    with _output_to(demo.logs / "dagbag.log"):
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=demo.env["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise DemoError(f"DAG {dag_id} did not load: {bag.import_errors or 'not found'}; see {demo.logs / 'dagbag.log'}")
    for day in demo.landing_days:
        logical = pendulum.parse(f"{day + dt.timedelta(days=1)}T01:00:00+00:00")  # the run whose interval is `day`
        log = demo.logs / f"{dag_id}-{day}.log"
        started = time.monotonic()
        with _output_to(log):
            run = dag.test(logical_date=logical)
        state = str(getattr(run.state, "value", run.state))
        say(f"      {dag_id} for {day}: {state} in {time.monotonic() - started:.0f}s (log: {log})")
        if state != "success":
            raise DemoError(f"{dag_id} failed for {day}; see {log}")


@step("report")
def report(demo: Demo) -> None:
    """Print what landed, what was quarantined and why."""
    import pandas as pd

    from evergreen.ingest import RECORD_KIND, state_digest

    model = demo.model
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
    labelled = [lake.read_parquet(lake.labelled_path(model.name, d)) for d in demo.landing_days]
    frame = pd.concat(labelled, ignore_index=True)
    say(f"\n      labelled examples in the lake: {len(frame)} rows "
        f"({', '.join(f'{k}={v}' for k, v in frame['source'].value_counts().sort_index().items())}) under "
        f"{lake.partition_dir(model.name, 'labelled', '*').replace('dt=*', '')}")
    digest = state_digest(demo.store, model.name, demo.landing_days)
    fingerprint = hashlib.sha256(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:16]
    say(f"      state fingerprint (store outcomes, predictions, ingestion records, lake partitions): {fingerprint}")
    demo.notes["fingerprint"] = fingerprint


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
