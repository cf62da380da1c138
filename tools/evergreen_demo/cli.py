"""The Evergreen demo on embedded defaults: ``python -m evergreen_demo`` (what ``make demo`` runs).

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
   with no champion (only promote_<model>, which this demo does not run yet, sets that alias) they record
   "cannot judge" and why;
7. ``report``      -- one summary: ingestion (what landed, what was quarantined and why), the retrain decision and
   the candidate, the monitoring verdicts, and the state fingerprint.

The steps are :mod:`evergreen_demo.steps` (later work adds its steps, promotion and A/B test, there), the report's
printing :mod:`evergreen_demo.report`, the fingerprint :mod:`evergreen_demo.digest`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from evergreen.airflow_env import airflow_env
from evergreen.paths import home
from evergreen_demo.runner import Demo, DemoError, say
from evergreen_demo.steps import STEPS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evergreen_demo", description=__doc__,
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
    from evergreen.store import open_store

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
