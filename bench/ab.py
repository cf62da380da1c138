"""The A/B analysis by simulation: false positives under daily looks, power at the minimum detectable effect, sample
ratio mismatch detection, and the analysis's wall time over 1e6 logged predictions.

Every figure uses the churn model's ``ab_test:`` policy (``include/config/churn.yaml``: the churn rate among each
arm's customers, lower is better, alpha 0.05, minimum detectable effect 2 points at 80% power, sequential tuning
15,000) and the platform's own code: the effect of each look is :func:`evergreen.stats.two_sample_difference` on the
arms' per-customer outcomes, the decision :func:`evergreen.experiment.analysis.judge` -- what
:func:`~evergreen.experiment.analysis.analyze` runs after it has joined the log with the outcomes. A check at the
start runs ``analyze`` itself, on the log frames, for a few of the simulated tests and asserts it decides as the
fast path does at every look.

**Tests.** A churn rate of ``--rate`` (25%) in the champion arm; each day ``daily`` new customers per arm, one
matured outcome each; ``daily`` is set so that the fixed-horizon minimum sample size for the MDE
(:func:`evergreen.stats.minimum_sample_size`) is reached on day ``--nmin-day`` (10). The test looks once a day for
``max_days`` (30) days, and stops at its first decision (promote, or stop: worse, futility, horizon).

* **A/A** (``--tests`` 1,000, the same rate in both arms): the false-positive rate is the share of tests whose
  decision is promote or stop-as-worse. Beside it, the rule a user would write instead: a fixed-horizon two-proportion
  z test at alpha every day, counted as a false positive at the first look with p < alpha.
* **Power** (the challenger's rate lower by the MDE): the share of tests promoted within the horizon, with
  ``daily`` set for N_min on day 10 and on day 30; and the fixed-horizon test's power at N_min (the 80% the MDE is
  defined by), as the reference.

**SRM.** The chi-square check (:func:`evergreen.stats.chi_square_gof`, p < ``srm_p_value`` = 0.001) on a split of
exactly 50,500 / 49,500 of 100,000 customers; then ``--srm-tests`` splits of 100,000 customers each assigned to the
challenger with probability 0.505 (and 0.5 for the false-alarm rate); and one such split through ``analyze``.

**Wall time.** ``analyze`` on a 1e6-row prediction log (split, churn rate; model metric; shadow mode, 5e5 requests
logged twice) with its outcomes, after the frames are built.

**The task over a store** (``--store``, on by default; ``--no-store`` skips it). The ``analyze`` task's body,
:func:`evergreen.experiment.tasks.analyze_run`, against a real embedded SQLite store and MLflow registry in a
temporary ``EVERGREEN_HOME`` (embedded mode, :func:`evergreen.airflow_env.airflow_env`). *Setup*, in one fresh
interpreter: ``--rows`` split-mode predictions of an A/A test (each customer's arm drawn once with
``challenger_share``, its churn drawn once at ``--rate``, its requests spread over ``--store-days`` days and
logged with their arm and version; no feature columns) and one outcome per request, written with
``Store.upsert_predictions`` / ``upsert_outcomes``; the ingestion records of every landing day the labels need
(``label_delay_days`` after the last prediction day); two registered versions as ``champion`` and ``challenger``;
the ledger's ``ab_start`` entry. *Analysis*, in another fresh interpreter: ``analyze_run("churn", context)`` for the
run whose matured window is those days, with a stand-in task context (data interval, a stand-in DAG run and task
instance, no params). Its time is the task's own -- registry, ledger and ingestion reads, the store reads of
predictions and outcomes, the join and analysis, the record write -- with the library imports timed apart. Peak
RSS is each interpreter's ``VmHWM`` (``ru_maxrss`` of a child carries its parent's peak across ``exec``).

    python bench/ab.py [--tests 1000] [--rate 0.25] [--nmin-day 10] [--srm-tests 1000] [--rows 1000000] [--seed 7]
                       [--store | --no-store] [--store-days 14]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START = dt.date(2026, 12, 1)


def wilson(k: int, n: int) -> str:
    from evergreen import stats

    iv = stats.proportion_interval(k, n)
    return f"{k / n:6.1%} (95% CI {iv.low:.1%}-{iv.high:.1%}, {k}/{n})"


def model_with(**changes):
    from evergreen.config import get_config

    model = get_config().model("churn")
    return dataclasses.replace(model, ab_test=dataclasses.replace(model.ab_test, **changes))


def minimum_units(policy, rate: float) -> int:
    from evergreen import stats

    sd_c = math.sqrt(rate * (1 - rate))
    sd_t = math.sqrt((rate - policy.min_detectable_effect) * (1 - rate + policy.min_detectable_effect))
    return stats.minimum_sample_size(sd_c, sd_t, policy.min_detectable_effect, confidence=1 - policy.alpha,
                                     power=policy.power, share_b=policy.challenger_share)


def run_test(policy, units_c, units_t, daily_c: int, daily_t: int):
    """One simulated test, looked at every day of the horizon: ``(first decision or None, its day, first day a
    daily z test had p < alpha, first day the confidence sequence excluded 0)`` (None: never)."""
    first = naive_day = cs_day = None
    day_of = policy.max_days
    for day in range(1, policy.max_days + 1):
        c, t = units_c[: day * daily_c], units_t[: day * daily_t]
        effect, verdict = look(policy, c, t, day)
        if naive_day is None and effect.p_value < policy.alpha:
            naive_day = day
        if cs_day is None and (verdict.sequence.low > 0 or verdict.sequence.high < 0):
            cs_day = day
        if first is None and verdict.status != "continue":
            first, day_of = verdict, day
    return first, day_of, naive_day, cs_day


def frames(rng, units_c, units_t, days: int, daily: int):
    """The prediction log and outcomes of a split test, one customer per request (what ``analyze`` reads)."""
    import numpy as np
    import pandas as pd

    n_c, n_t = days * daily, days * daily
    arm = np.array(["champion"] * n_c + ["challenger"] * n_t, dtype=object)
    label = np.concatenate([units_c[:n_c], units_t[:n_t]])
    n = len(arm)
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    pred = pd.DataFrame({"request_id": ids, "entity_id": np.char.add("e", np.arange(n).astype(str)).astype(object),
                         "model_version": np.where(arm == "champion", "1", "2"), "arm": arm,
                         "prediction": 0.0, "score": rng.random(n)})
    return pred, pd.DataFrame({"request_id": ids, "label": label})


def look(policy, c, t, day: int):
    """The fast path's verdict on one look at the per-customer outcomes ``c`` (champion) and ``t``."""
    from evergreen import stats
    from evergreen.experiment.analysis import judge

    effect = stats.two_sample_difference(c, t, 1 - policy.alpha)
    sd = [math.sqrt(v.mean() * (1 - v.mean())) for v in (c, t)]
    n_min = stats.minimum_sample_size(*sd, policy.min_detectable_effect, confidence=1 - policy.alpha,
                                      power=policy.power, share_b=policy.challenger_share)
    sign = 1.0 if policy.better == "higher" else -1.0
    return effect, judge(policy, sign * effect.value, effect.se, len(c) + len(t), n_min, day)


def check_full_path(policy, model, rng, rate: float, daily: int, tests: int) -> str:
    """``analyze`` on the log frames decides as the fast path does, at looks of ``tests`` A/A tests."""
    import numpy as np

    from evergreen.experiment.analysis import analyze

    looks = 0
    for _ in range(tests):
        total = policy.max_days * daily
        units_c = (rng.random(total) < rate).astype("float64")
        units_t = (rng.random(total) < rate).astype("float64")
        for day in (1, 5, 10, 20, 30):
            pred, out = frames(rng, units_c, units_t, day, daily)
            full = analyze(pred, out, model, champion_version="1", challenger_version="2", window_start=START,
                           window_end=START + dt.timedelta(days=day), as_of=START, seed=1)
            _, verdict = look(policy, units_c[: day * daily], units_t[: day * daily], day)
            assert full.status == verdict.status, (day, full.status, verdict.status, full.reason)
            assert np.isclose(full.sequential["low"], verdict.sequence.low), (full.sequential, verdict.sequence)
            looks += 1
    return f"analyze() on the log frames agreed with the fast path at {looks} looks of {tests} A/A tests"


# --- the task over a store: each phase in a fresh interpreter ---------------------------------------------------

STORE_MODEL = "churn"
STORE_START = dt.date(2027, 1, 1)


@dataclasses.dataclass(frozen=True)
class StandInDagRun:
    """Stands in for the task context's ``dag_run``: what ``analyze_run`` reads of it (its type, dag and run ids)."""

    dag_id: str
    run_id: str
    run_type: str = "scheduled"


@dataclasses.dataclass(frozen=True)
class StandInTaskInstance:
    """Stands in for the task context's ``ti``: the ids a record keeps of the task instance that wrote it."""

    dag_id: str
    run_id: str
    task_id: str = "analyze"
    map_index: int = -1
    try_number: int = 1


def peak_rss_mb() -> float:
    """This interpreter's peak RSS (``VmHWM``, reset by ``exec``), else ``ru_maxrss``, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def use_embedded_home(home: Path) -> None:
    """Point this interpreter at an embedded home of its own, as bench/serving.py does: no Connection, lake or
    Airflow setting of the caller's environment reaches it (``airflow_env()`` keeps values already set)."""
    from evergreen.airflow_env import airflow_env

    for key in (*airflow_env(), "EVERGREEN_LAKE_URI", "EVERGREEN_LANDING_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT",
                "AIRFLOW_CONN_EVERGREEN_STORE"):
        os.environ.pop(key, None)
    os.environ.update({"EVERGREEN_HOME": str(home), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    os.environ.update(airflow_env())


def store_interval(days: int, delay: int) -> tuple[dt.datetime, dt.datetime]:
    """The data interval of the run whose matured window is the ``days`` prediction days from STORE_START: its
    interval ends ``days + label_delay_days`` days after the start (as tests/dags/test_ab_analysis.py's runs)."""
    end = dt.datetime.combine(STORE_START + dt.timedelta(days=days + delay), dt.time(), tzinfo=dt.timezone.utc)
    return end - dt.timedelta(days=1), end


def store_setup(work: Path, rows: int, days: int, rate: float, seed: int) -> dict[str, Any]:
    """Write the A/A test's prediction log, outcomes, ingestion records, versions, aliases and ab_start entry."""
    use_embedded_home(work / "home")
    import numpy as np
    import pandas as pd

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.ingest.tasks import RECORD_KIND as INGESTION_KIND
    from evergreen.promote import ledger
    from evergreen.store.base import Record

    model = model_with()
    delay = model.performance.label_delay_days
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    customers = max(rows // 3, 1)
    challenger_of = rng.random(customers) < model.ab_test.challenger_share  # a customer stays in its arm
    churned = (rng.random(customers) < rate).astype("float64")
    cust = rng.integers(0, customers, rows)
    challenger = challenger_of[cust]
    ids = np.char.add("r", np.arange(rows).astype(str)).astype(object)
    ts = pd.Timestamp(STORE_START, tz="UTC") + pd.to_timedelta(rng.integers(0, days * 86_400_000_000, rows), unit="us")
    score = np.clip(0.3 * churned[cust] + rng.normal(0.35, 0.2, rows), 0, 1)
    pred = pd.DataFrame({"request_id": ids, "entity_id": np.char.add("c", cust.astype(str)).astype(object), "ts": ts,
                         "model_version": np.where(challenger, "2", "1").astype(object),
                         "arm": np.where(challenger, "challenger", "champion").astype(object),
                         "prediction": (score >= 0.5).astype("float64"), "score": score})
    out = pd.DataFrame({"request_id": ids, "ts": ts + pd.Timedelta(days=3), "label": churned[cust]})
    built = time.perf_counter() - t0

    store = StoreHook().get_conn()
    t0 = time.perf_counter()
    store.upsert_predictions(STORE_MODEL, pred, [])
    predictions_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.upsert_outcomes(STORE_MODEL, out)
    outcomes_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(days + delay):  # every landing day the window's labels need
        day = STORE_START + dt.timedelta(days=i)
        store.put_record(Record(INGESTION_KIND, f"{STORE_MODEL}/{day.isoformat()}", STORE_MODEL,
                                dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc),
                                {"rows_read": 0, "landed": 0, "quarantined": 0, "files": []}))
    client = MlflowHook().get_conn()
    client.create_registered_model(STORE_MODEL)
    source = work / "unused-model"  # the analysis reads the prediction log, never the models
    source.mkdir()
    made = [client.create_model_version(STORE_MODEL, source.as_uri(), tags={"evergreen.status": "candidate"})
            for _ in range(2)]
    champion, challenger_version = (str(v.version) for v in made)
    assert (champion, challenger_version) == ("1", "2"), (champion, challenger_version)
    client.set_registered_model_alias(STORE_MODEL, "champion", champion)
    client.set_registered_model_alias(STORE_MODEL, "challenger", challenger_version)
    ledger.append(store, ledger.LedgerEntry(
        model=STORE_MODEL, event=ledger.AB_START,
        ts=dt.datetime.combine(STORE_START, dt.time(), tzinfo=dt.timezone.utc),
        actor=ledger.Actor(dag_id=f"promote_{STORE_MODEL}", run_id="bench-ab", task_id="apply"),
        alias="challenger", new_version=challenger_version, outcome="ab_test"))
    rest_s = time.perf_counter() - t0
    entities = {arm: int(pred.loc[pred["arm"] == arm, "entity_id"].nunique()) for arm in ("champion", "challenger")}
    return {"rows": rows, "entities": entities, "build_s": built, "predictions_s": predictions_s,
            "outcomes_s": outcomes_s, "rest_s": rest_s, "ingestion_records": days + delay,
            "db_mb": (work / "home" / "store.db").stat().st_size / 2**20, "peak_mb": peak_rss_mb()}


def store_analysis(work: Path, days: int) -> dict[str, Any]:
    """``analyze_run`` once, timed, with a breakdown of its store reads and ``analyze()``."""
    use_embedded_home(work / "home")
    t0 = time.perf_counter()
    import mlflow.tracking  # noqa: F401  -- the task process's imports, timed apart from the task body
    import pandas  # noqa: F401

    from evergreen.experiment import analysis, tasks
    from evergreen.hooks.mlflow import MlflowHook  # noqa: F401
    from evergreen.hooks.store import StoreHook
    from evergreen.store.sql import SqlStore

    imports_s = time.perf_counter() - t0
    spent: dict[str, float] = {}

    def timed(name: str, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    # instrumentation of this interpreter only: the task body looks these up at call time
    SqlStore.read_predictions = timed("read_predictions", SqlStore.read_predictions)
    SqlStore.read_outcomes = timed("read_outcomes", SqlStore.read_outcomes)
    analysis.analyze = timed("analyze", analysis.analyze)
    start, end = store_interval(days, model_with().performance.label_delay_days)
    run_id = f"scheduled__{end.isoformat()}"
    dag_id = f"ab_analysis_{STORE_MODEL}"
    context = {"data_interval_start": start, "data_interval_end": end, "logical_date": start, "params": {},
               "dag_run": StandInDagRun(dag_id, run_id), "ti": StandInTaskInstance(dag_id, run_id)}
    t0 = time.perf_counter()
    summary = tasks.analyze_run(STORE_MODEL, context)
    task_s = time.perf_counter() - t0
    record = StoreHook().get_conn().get_record(tasks.RECORD_KIND, summary["record_key"])
    assert record is not None, f"analyze_run wrote no {tasks.RECORD_KIND} record {summary['record_key']}"
    return {"imports_s": imports_s, "task_s": task_s, "spent": spent, "status": summary["status"],
            "stop_status": summary["stop_status"], "reason": summary["reason"], "window": record.payload["window"],
            "units": record.payload["units"], "arms": record.payload["arms"], "peak_mb": peak_rss_mb()}


def worker(kind: str, *args: str) -> dict[str, Any]:
    """Run one phase in a fresh interpreter, so its time and peak RSS are its own."""
    out = subprocess.run([sys.executable, __file__, "--worker", kind, *args], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"bench/ab.py --worker {kind} failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def store_section(rows: int, days: int, rate: float, seed: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="evergreen-bench-ab-"))
    began = time.perf_counter()
    try:
        setup = worker("setup", str(work), str(rows), str(days), str(rate), str(seed))
        print(f"\nanalyze_run() over {rows:,} logged predictions in an embedded SQLite store ({days} prediction days, "
              f"A/A at churn {rate}, {setup['entities']['champion']:,} / {setup['entities']['challenger']:,} "
              f"customers):")
        writes = setup["predictions_s"] + setup["outcomes_s"] + setup["rest_s"]
        print(f"  setup (store writes): {writes:.1f} s -- upsert_predictions {setup['predictions_s']:.1f} s, "
              f"upsert_outcomes {setup['outcomes_s']:.1f} s, {setup['ingestion_records']} ingestion records, "
              f"2 versions + aliases in a new MLflow database and the ab_start entry {setup['rest_s']:.1f} s "
              f"(frames built in {setup['build_s']:.1f} s before); store.db {setup['db_mb']:,.0f} MB; peak RSS "
              f"{setup['peak_mb']:,.0f} MB")
        res = worker("analysis", str(work), str(days))
        spent = res["spent"]
        rest = res["task_s"] - sum(spent.values())
        print(f"  analysis (analyze_run: store read + join + analysis): {res['task_s']:.1f} s -- read_predictions "
              f"{spent.get('read_predictions', 0):.1f} s, read_outcomes {spent.get('read_outcomes', 0):.1f} s, "
              f"analyze() {spent.get('analyze', 0):.1f} s, the rest (registry, ledger, ingestion records, record "
              f"write) {rest:.1f} s; imports before it {res['imports_s']:.1f} s; peak RSS {res['peak_mb']:,.0f} MB")
        arms = ", ".join(f"{a['arm']} {a['entities']:,} customers"
                         + ("" if a["value"] is None else f", churn {a['value']:.4f}") for a in res["arms"])
        verdict = f"{res['status']} {res['stop_status'] or ''}".strip()
        print(f"  -> {verdict}, window {res['window']['start']}..{res['window']['end']}, {res['units']:,} units "
              f"({arms}): {res['reason']}")
        print(f"  store section total {time.perf_counter() - began:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    import numpy as np
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.25)
    parser.add_argument("--nmin-day", type=int, default=10)
    parser.add_argument("--srm-tests", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", action=argparse.BooleanOptionalAction, default=True,
                        help="time analyze_run over --rows predictions in an embedded store (default: on)")
    parser.add_argument("--store-days", type=int, default=14, help="prediction days the store's rows span")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, work, *rest = args.worker
        if kind == "setup":
            rows, days, rate, seed = rest
            result = store_setup(Path(work), int(rows), int(days), float(rate), int(seed))
        else:
            result = store_analysis(Path(work), int(rest[0]))
        print(json.dumps(result, default=str))
        return 0
    began = time.perf_counter()
    model = model_with()
    policy = model.ab_test
    rng = np.random.default_rng(args.seed)
    mde = policy.min_detectable_effect
    n_min = minimum_units(policy, args.rate)
    print(f"policy: {policy.metric} ({policy.better} is better), alpha {policy.alpha}, MDE {mde}, power "
          f"{policy.power}, sequential_tuning {policy.sequential_tuning}, max_days {policy.max_days}, "
          f"min_units_per_arm {policy.min_units_per_arm}")
    print(f"champion churn rate {args.rate}; fixed-horizon minimum sample size for the MDE: {n_min} customers "
          f"(both arms)")

    daily = math.ceil(n_min / 2 / args.nmin_day)
    print(check_full_path(policy, model, np.random.default_rng(args.seed + 1), args.rate, daily, 4))

    # --- A/A ---------------------------------------------------------------------------------------------------
    total = policy.max_days * daily
    t0 = time.perf_counter()
    fp = naive = cs_only = 0
    reasons: dict[str, int] = {}
    stop_days = []
    for _ in range(args.tests):
        c = (rng.random(total) < args.rate).astype("float64")
        t = (rng.random(total) < args.rate).astype("float64")
        verdict, day, naive_day, cs_day = run_test(policy, c, t, daily, daily)
        kind = "continue to the end" if verdict is None else f"{verdict.status} {verdict.stop_status or ''}".strip()
        reasons[kind] = reasons.get(kind, 0) + 1
        stop_days.append(day)
        fp += verdict is not None and (verdict.status == "promote" or verdict.stop_status == "rejected")
        naive += naive_day is not None
        cs_only += cs_day is not None
    print(f"\nA/A: {args.tests} tests, {daily} customers per arm per day (N_min on day {args.nmin_day}), daily looks "
          f"for {policy.max_days} days ({time.perf_counter() - t0:.1f} s)")
    print(f"  false-positive rate, ab_analysis (always-valid CS):   {wilson(fp, args.tests)}   goal: alpha "
          f"{policy.alpha:.0%} +- 1 point")
    print(f"  false-positive rate, naive daily two-proportion z:   {wilson(naive, args.tests)}")
    print(f"  the confidence sequence alone, all {policy.max_days} looks, no futility stop: "
          f"{wilson(cs_only, args.tests)}")
    print("  first decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
          + f"; mean day of the first decision {sum(stop_days) / len(stop_days):.1f}")

    # --- power ---------------------------------------------------------------------------------------------------
    print(f"\npower at the MDE (challenger churn {args.rate - mde:.2f} vs {args.rate:.2f}), {args.tests} tests each:")
    for day_nmin in (args.nmin_day, policy.max_days):
        d = math.ceil(n_min / 2 / day_nmin)
        tot = policy.max_days * d
        t0 = time.perf_counter()
        wins = days = 0
        for _ in range(args.tests):
            c = (rng.random(tot) < args.rate).astype("float64")
            t = (rng.random(tot) < args.rate - mde).astype("float64")
            verdict, day, _, _ = run_test(policy, c, t, d, d)
            if verdict is not None and verdict.status == "promote":
                wins += 1
                days += day
        mean_day = f", mean day of promotion {days / wins:.1f}" if wins else ""
        print(f"  N_min reached on day {day_nmin:2d} ({d} per arm per day): promoted {wilson(wins, args.tests)}"
              f"{mean_day} ({time.perf_counter() - t0:.1f} s)")
    from evergreen import stats

    half = n_min // 2
    hits = 0
    for _ in range(args.tests):
        c = rng.random(half) < args.rate
        t = rng.random(half) < args.rate - mde
        e = stats.two_sample_difference(c.astype("float64"), t.astype("float64"), 1 - policy.alpha)
        hits += e.p_value < policy.alpha and e.value < 0
    print(f"  reference, one fixed-horizon z test at N_min: {wilson(hits, args.tests)} (the MDE's defining "
          f"{policy.power:.0%})")

    # --- SRM -----------------------------------------------------------------------------------------------------
    stat, p = stats.chi_square_gof([50_500, 49_500], [0.5, 0.5])
    print(f"\nSRM: 50,500 / 49,500 of 100,000 exactly: chi-square {stat:.2f}, p = {p:.5f} -> "
          f"{'flagged' if p < policy.srm_p_value else 'not flagged'} at p < {policy.srm_p_value}")
    for share in (0.505, 0.5):
        flagged = sum(stats.chi_square_gof([n_t := rng.binomial(100_000, share), 100_000 - n_t],
                                           [0.5, 0.5])[1] < policy.srm_p_value for _ in range(args.srm_tests))
        label = "detected" if share != 0.5 else "false alarms"
        print(f"  {args.srm_tests} splits of 100,000 with true challenger share {share}: {label} "
              f"{wilson(int(flagged), args.srm_tests)}")
    for n in (1_000_000,):
        flagged = sum(stats.chi_square_gof([n_t := rng.binomial(n, 0.505), n - n_t], [0.5, 0.5])[1]
                      < policy.srm_p_value for _ in range(args.srm_tests))
        print(f"  {args.srm_tests} splits of {n:,} with true challenger share 0.505: detected "
              f"{wilson(int(flagged), args.srm_tests)}")
    from evergreen.experiment.analysis import analyze

    n = 100_000
    arm_t = rng.random(n) < 0.505
    units = (rng.random(n) < args.rate).astype("float64")
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    arm = np.where(arm_t, "challenger", "champion").astype(object)
    pred = pd.DataFrame({"request_id": ids, "entity_id": np.char.add("e", np.arange(n).astype(str)).astype(object),
                         "model_version": np.where(arm_t, "2", "1"), "arm": arm, "prediction": 0.0,
                         "score": rng.random(n)})
    out = pd.DataFrame({"request_id": ids, "label": units})
    res = analyze(pred, out, model, champion_version="1", challenger_version="2", window_start=START,
                  window_end=START + dt.timedelta(days=7), as_of=START)
    print(f"  one simulated 50.5% split through analyze(): counts {res.srm['counts']}, p = {res.srm['p_value']:.2g} "
          f"-> mismatch {res.srm['mismatch']}, status {res.status}")

    # --- wall time -------------------------------------------------------------------------------------------------
    print(f"\nwall time of analyze() over {args.rows:,} logged predictions (frames built beforehand):")
    n = args.rows
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    ent = np.char.add("e", rng.integers(0, n // 3, n).astype(str)).astype(object)
    arm_t = (np.frompyfunc(hash, 1, 1)(ent).astype("int64") % 2 == 0)  # an entity stays in its arm
    label = (rng.random(n) < args.rate).astype("float64")
    score = np.clip(0.3 * label + rng.normal(0.35, 0.2, n), 0, 1)
    pred = pd.DataFrame({"request_id": ids, "entity_id": ent, "model_version": np.where(arm_t, "2", "1"),
                         "arm": np.where(arm_t, "challenger", "champion").astype(object),
                         "prediction": (score >= 0.5).astype("float64"), "score": score})
    out = pd.DataFrame({"request_id": ids, "label": label})
    cases = [("split, churn rate per customer", model, pred, out),
             ("split, roc_auc per arm", model_with(metric="model_metric"), pred, out)]
    half = n // 2
    sid = np.concatenate([ids[:half], np.char.add(ids[:half].astype(str), "~shadow").astype(object)])
    shadow = pd.DataFrame({"request_id": sid, "entity_id": np.concatenate([ent[:half], ent[:half]]),
                           "model_version": ["1"] * half + ["2"] * half,
                           "arm": ["champion"] * half + ["shadow"] * half,
                           "prediction": np.concatenate([pred["prediction"][:half]] * 2),
                           "score": np.concatenate([score[:half], np.clip(score[:half] + rng.normal(0, .1, half), 0,
                                                                          1)])})
    cases.append(("shadow, paired roc_auc (5e5 requests x 2 rows)", model_with(mode="shadow"), shadow,
                  out.iloc[:half]))
    for name, m, p_frame, o_frame in cases:
        t0 = time.perf_counter()
        res = analyze(p_frame, o_frame, m, champion_version="1", challenger_version="2", window_start=START,
                      window_end=START + dt.timedelta(days=14), as_of=START)
        took = time.perf_counter() - t0
        note = f"; {res.bootstrap_note}" if res.bootstrap_note else ""
        print(f"  {name}: {took:.2f} s -> {res.status}, {res.units:,} units{note}")
    if args.store:
        del pred, out, shadow, cases
        store_section(args.rows, args.store_days, args.rate, args.seed)
    print(f"\nbench/ab.py total {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
