"""Ingestion throughput: N outcome rows landed as CSV files, ingested into the SQLite store and the lake.

For each N, in a fresh working folder:

1. setup (not timed): simulate N logged predictions and upsert them into an embedded SQLite store, then land their
   outcomes for the next day as ``--files`` CSV files (the way a source system exports them);
2. ``ingest``: a fresh interpreter runs :func:`evergreen.ingest.tasks.ingest_interval` -- the function the
   ``ingest_feedback`` task calls -- for that day and reports wall time and peak RSS
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the interpreter and its imports);
3. ``re-run``: the same again on the now-ingested day (what a retry or a backfill costs: nothing is rewritten in
   the store, the lake partitions are rewritten);
4. ``bare load`` -- the peer a user would otherwise write: ``pandas.read_csv`` of the same files straight into
   ``store.upsert_outcomes`` on a copy of the pre-ingest store, with no validation, no join with the logged
   predictions, no quarantine and no lake partition. The ratio says what the contract costs.

Wall time and CPU time (user + system) are both printed: on a shared machine the wall time includes waiting for
a core, the CPU time does not. Peak RSS includes the interpreter and its imports (~150 MB).

Goal: 1e6 outcome rows ingested in under 60 s and under 2 GB.

    python bench/ingest.py [--sizes 100000,1000000] [--files 4] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_SECONDS = 60.0
GOAL_RSS_MB = 2048.0
MODEL = "churn"
PRED_DAY = dt.date(2026, 11, 2)
LAND_DAY = PRED_DAY + dt.timedelta(days=1)


def _setup(work: Path, n: int, files: int) -> None:
    from evergreen import lake
    from evergreen_demo import simulate
    from evergreen.config import get_config
    from evergreen.store.sql import SqlStore

    model = get_config().model(MODEL)
    day = simulate.simulate_day(model, PRED_DAY, n)
    store = SqlStore(f"sqlite:///{work / 'store.db'}")
    store.upsert_predictions(MODEL, day.predictions, model.feature_names)
    store.close()
    landing = lake.landing_dir(MODEL, LAND_DAY, str(work / "landing"))
    Path(landing).mkdir(parents=True, exist_ok=True)
    frame = simulate.outcome_file_frame(model, day)
    frame[model.timestamp] = frame[model.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    size = -(-n // files)
    for i in range(files):
        frame.iloc[i * size : (i + 1) * size].to_csv(f"{landing}/outcomes-{i:03d}.csv", index=False)


def _ingest(work: Path, store_file: str) -> dict:
    import logging
    import resource

    from evergreen.config import get_config
    from evergreen.ingest.tasks import ingest_interval
    from evergreen.store.sql import SqlStore

    logging.basicConfig(level=logging.WARNING)
    model = get_config().model(MODEL)
    store = SqlStore(f"sqlite:///{work / store_file}")
    t0, c0 = time.perf_counter(), time.process_time()
    (result,) = ingest_interval(model, LAND_DAY, LAND_DAY + dt.timedelta(days=1), store,
                                landing_root=str(work / "landing"), lake_root=str(work / "lake"))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu": time.process_time() - c0, "rows": result.rows_read, "landed": result.landed,
            "quarantined": result.quarantined, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _bare(work: Path, store_file: str) -> dict:
    import resource

    import pandas as pd

    from evergreen import lake
    from evergreen.config import get_config
    from evergreen.store.sql import SqlStore

    model = get_config().model(MODEL)
    store = SqlStore(f"sqlite:///{work / store_file}")
    t0, c0 = time.perf_counter(), time.process_time()
    rows = 0
    for uri in lake.list_files(lake.landing_dir(MODEL, LAND_DAY, str(work / "landing")), ["csv"]):
        frame = pd.read_csv(uri)
        frame = frame.rename(columns={model.request_id: "request_id", model.timestamp: "ts", model.label.name: "label"})
        rows += store.upsert_outcomes(MODEL, frame[["request_id", "ts", "label"]])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu": time.process_time() - c0, "rows": rows, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _worker(kind: str, work: Path, *args: str) -> dict | None:
    """Run one step in a fresh interpreter, so its peak RSS is its own."""
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(work), *args], check=True,
                         capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def _row(label: str, n: int, r: dict) -> str:
    return (f"{label:<10} N={n:>9,}  {r['seconds']:7.1f} s (cpu {r['cpu']:5.1f} s)  "
            f"{r['rows'] / r['seconds']:>9,.0f} rows/s  peak RSS {r['max_rss_mb']:6.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated outcome row counts")
    parser.add_argument("--files", type=int, default=4, help="CSV files the rows are landed in")
    parser.add_argument("--keep", action="store_true", help="keep the working folders (printed)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, work, *rest = args.worker
        work_path = Path(work)
        if kind == "setup":
            _setup(work_path, int(rest[0]), int(rest[1]))
        elif kind == "ingest":
            print(json.dumps(_ingest(work_path, rest[0])))
        elif kind == "bare":
            print(json.dumps(_bare(work_path, rest[0])))
        return

    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    print(f"bench/ingest.py: SQLite store, {args.files} CSV file(s) per day, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPU(s)")
    verdicts = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"evergreen-bench-ingest-{n}-"))
        try:
            t0 = time.perf_counter()
            _worker("setup", work, str(n), str(args.files))
            shutil.copy(work / "store.db", work / "store-bare.db")
            print(f"setup      N={n:>9,}  {time.perf_counter() - t0:7.1f} s  (predictions logged, outcomes landed; "
                  "not timed)")
            first = _worker("ingest", work, "store.db")
            print(_row("ingest", n, first) + f"  landed {first['landed']:,}, quarantined {first['quarantined']:,}")
            again = _worker("ingest", work, "store.db")
            print(_row("re-run", n, again))
            bare = _worker("bare", work, "store-bare.db")
            print(_row("bare load", n, bare) + f"  -> ingest takes {first['seconds'] / bare['seconds']:.2f}x the "
                  "bare load (validation, join, quarantine and lake included)")
            if n >= 1_000_000:
                ok = first["seconds"] < GOAL_SECONDS * n / 1_000_000 and first["max_rss_mb"] < GOAL_RSS_MB
                verdicts.append(f"goal for N={n:,} (< {GOAL_SECONDS * n / 1_000_000:.0f} s, < {GOAL_RSS_MB:.0f} MB): "
                                f"{'met' if ok else 'NOT met'}")
        finally:
            if args.keep:
                print(f"           kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()
