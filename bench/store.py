"""Store write throughput: SqlStore (SQLite) and MongoStore (mongomock) upserts, against pandas.to_sql.

    python bench/store.py [--sql-rows 1000000] [--mongomock-rows 2000 4000]

Prints wall time and rows/s per backend and kind. The peer is what a user would otherwise write:
``DataFrame.to_sql`` appending the same rows to an SQLite table (no upsert, not idempotent, features as columns).
mongomock stands in for a MongoDB server in tests: it scans its whole collection on every upsert, so its time grows
with the square of the row count; its figures say what the test suite can afford, not what MongoDB does. The
mongomock stores are the test suite's own (tests/mongomock_store.py): the runtime has no mongomock support.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    print(f"{label:<44} {n:>9,} rows  {wall:7.2f} s  {n / wall:>10,.0f} rows/s  peak RSS {peak_mb():,.0f} MB", flush=True)
    return wall


def traffic(n: int):
    from evergreen.config import get_config
    from evergreen_demo.simulate import simulate_day

    model = get_config().model("churn")
    day = simulate_day(model, dt.date(2026, 11, 2), n)
    outcomes = day.outcomes.rename(columns={model.label.name: "label"})
    return model, day.predictions, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sql-rows", type=int, default=1_000_000)
    parser.add_argument("--mongomock-rows", type=int, nargs="*", default=[1_000, 2_000, 4_000])
    args = parser.parse_args()

    from evergreen.store.sql import SqlStore

    sys.path.insert(0, str(TESTS))
    from mongomock_store import mongomock_store

    folder = Path(tempfile.mkdtemp(prefix="evergreen-bench-store-"))
    n = args.sql_rows
    model, preds, outs = traffic(n)
    features = model.feature_names
    print(f"# {n:,} simulated '{model.name}' predictions ({len(features)} features) and outcomes; SQLite in {folder}")

    store = SqlStore(f"sqlite:///{folder / 'store.db'}")
    t_out = timed("SqlStore.upsert_outcomes (SQLite)", n, lambda: store.upsert_outcomes("churn", outs))
    timed("  again (same rows: idempotent upsert)", n, lambda: store.upsert_outcomes("churn", outs))
    t_pred = timed("SqlStore.upsert_predictions (SQLite)", n,
                   lambda: store.upsert_predictions("churn", preds, features))
    timed("SqlStore.read_predictions (one day)", n, lambda: store.read_predictions("churn"))
    store.close()

    peer = sqlite3.connect(folder / "peer.db")
    t_peer_out = timed("peer: DataFrame.to_sql outcomes (append)", n,
                       lambda: outs.assign(ts=outs["ts"].astype("int64")).to_sql("o", peer, index=False, chunksize=50_000))
    t_peer_pred = timed("peer: DataFrame.to_sql predictions (append)", n,
                        lambda: preds.assign(ts=preds["ts"].astype("int64")).to_sql("p", peer, index=False,
                                                                                    chunksize=50_000))
    peer.close()
    print(f"# SqlStore / to_sql wall time: outcomes {t_out / t_peer_out:.1f}x, predictions {t_pred / t_peer_pred:.1f}x")

    for m in args.mongomock_rows:
        mstore = mongomock_store(f"mongomock://bench/{uuid.uuid4().hex}")
        timed("MongoStore.upsert_outcomes (mongomock)", m, lambda: mstore.upsert_outcomes("churn", outs.head(m)))
        timed("MongoStore.upsert_predictions (mongomock)", m,
              lambda: mstore.upsert_predictions("churn", preds.head(m), features))
        mstore.close()


if __name__ == "__main__":
    main()
