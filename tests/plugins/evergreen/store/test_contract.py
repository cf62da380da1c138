"""The store contract (evergreen.store.base), one suite run against every backend.

Backends: ``sqlite`` (a temp file) and ``mongomock`` always; ``mongodb`` when ``EVERGREEN_TEST_MONGO_URI`` names a
real server (each test gets its own database, dropped after); ``postgresql`` when ``EVERGREEN_TEST_POSTGRES_URI``
names a database (each test gets its own schema, dropped after).

Reads are compared with explicit expected frames (values, dtypes and column order), so every backend that passes
returns the same DataFrames for the same data. Outcome writes follow the correction rule
(:func:`evergreen.corrections.wins`): checked case by case against the function, and with two writers racing.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading
import urllib.parse
import uuid

import numpy as np
import pandas as pd
import pytest
from mongomock_store import mongomock_store

from evergreen.corrections import wins
from evergreen.store import open_store
from evergreen.store.base import (
    OUTCOME_COLUMNS,
    OUTCOME_DTYPES,
    PREDICTION_COLUMNS,
    PREDICTION_DTYPES,
    Record,
    RecordConflict,
    Store,
    StoreError,
)

MONGO_URI = os.environ.get("EVERGREEN_TEST_MONGO_URI")
POSTGRES_URI = os.environ.get("EVERGREEN_TEST_POSTGRES_URI")

BACKENDS = [
    "sqlite",
    "mongomock",
    pytest.param("mongodb", marks=pytest.mark.skipif(
        not MONGO_URI, reason="set EVERGREEN_TEST_MONGO_URI=mongodb://host:port to run against a real MongoDB")),
    pytest.param("postgresql", marks=pytest.mark.skipif(
        not POSTGRES_URI, reason="set EVERGREEN_TEST_POSTGRES_URI=postgresql://user:pw@host/db to run against it")),
]

DAY = pd.Timestamp("2026-11-02", tz="UTC")
US = pd.Timedelta(microseconds=1)


def _with_database(uri: str, name: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def make_store(backend, tmp_path):
    """Open a fresh, empty store of the backend under test (``batch_size`` applies to MongoDB backends);
    ``same_as=<store>`` opens a second client of that store's database instead (another writer)."""
    opened: list[tuple[Store, object]] = []
    names: dict[int, str] = {}

    def _make(same_as: Store | None = None, **kwargs) -> Store:
        name = names[id(same_as)] if same_as is not None else f"evergreen_test_{uuid.uuid4().hex[:12]}"
        cleanup = None
        if same_as is not None and backend == "postgresql":
            from evergreen.store.sql import SqlStore

            store = SqlStore(POSTGRES_URI, connect_args={"options": f"-csearch_path={name}"})
        elif backend == "sqlite":
            store = open_store(f"sqlite:///{tmp_path / f'{name}.db'}")
        elif backend in ("mongomock", "mongodb"):
            from evergreen.store.mongo import MongoStore

            if backend == "mongomock":
                store = mongomock_store(f"mongomock://contract/{name}", **kwargs)
            else:
                store = MongoStore(_with_database(MONGO_URI, name), **kwargs)
            if backend == "mongodb" and same_as is None:
                def cleanup(store=store, name=name):
                    store.client.drop_database(name)
        else:
            import sqlalchemy as sa

            from evergreen.store.sql import SqlStore

            admin = sa.create_engine(POSTGRES_URI)
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
            store = SqlStore(POSTGRES_URI, connect_args={"options": f"-csearch_path={name}"})

            def cleanup(admin=admin, name=name):
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
                admin.dispose()
        names[id(store)] = name
        opened.append((store, cleanup))
        return store

    yield _make
    for store, cleanup in reversed(opened):
        store.close()
        if cleanup is not None:
            cleanup()


@pytest.fixture
def store(make_store) -> Store:
    return make_store()


def predictions(ids, ts, **overrides) -> pd.DataFrame:
    """Predictions with two features (``x`` float, ``plan`` category)."""
    n = len(ids)
    frame = pd.DataFrame(
        {
            "request_id": list(ids),
            "entity_id": [f"e-{i}" for i in ids],
            "ts": list(ts),
            "model_version": "3",
            "arm": "champion",
            "prediction": [float(i % 2) for i in range(n)],
            "score": [0.25 + i / (4 * n) for i in range(n)],
            "x": [i * 0.5 for i in range(n)],
            "plan": [("basic", "premium")[i % 2] for i in range(n)],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    return frame


def outcomes(ids, ts, labels, keys=None) -> pd.DataFrame:
    frame = pd.DataFrame({"request_id": list(ids), "ts": list(ts), "label": list(labels)})
    if keys is not None:
        frame["landing_key"] = list(keys)
    return frame


def expected_outcomes(ids, ts, labels, keys=None) -> pd.DataFrame:
    return pd.DataFrame(
        {"request_id": pd.Series(list(ids), dtype=object),
         "ts": pd.Series(pd.to_datetime(list(ts), utc=True), dtype="datetime64[ns, UTC]"),
         "label": pd.Series(list(labels), dtype="float64"),
         "landing_key": pd.Series(list(keys) if keys is not None else [""] * len(ids), dtype=object)}
    )


# --- upserts ------------------------------------------------------------------------------------------


def test_upserting_the_same_rows_twice_leaves_the_same_content(store):
    ts = [DAY + pd.Timedelta(minutes=i) for i in range(5)]
    df = predictions([f"r{i}" for i in range(5)], ts)
    assert store.upsert_predictions("churn", df, ["x", "plan"]) == 5
    first = store.read_predictions("churn")
    assert store.upsert_predictions("churn", df, ["x", "plan"]) == 5
    pd.testing.assert_frame_equal(store.read_predictions("churn"), first)
    assert len(first) == 5

    out = outcomes(["r0", "r1"], ts[:2], [1, 0])
    store.upsert_outcomes("churn", out)
    store.upsert_outcomes("churn", out)
    pd.testing.assert_frame_equal(store.read_outcomes("churn"), expected_outcomes(["r0", "r1"], ts[:2], [1.0, 0.0]))


def test_a_changed_row_replaces_the_stored_one(store):
    ts = [DAY + pd.Timedelta(minutes=i) for i in range(3)]
    store.upsert_predictions("churn", predictions(["a", "b", "c"], ts), ["x", "plan"])
    later = DAY + pd.Timedelta(hours=5)
    changed = predictions(["b"], [later], score=[0.99], x=[42.5], plan=["gold"], arm=["challenger"])
    store.upsert_predictions("churn", changed, ["x", "plan"])

    got = store.read_predictions("churn")
    assert got["request_id"].tolist() == ["a", "c", "b"]  # b moved to its new time
    row = got.set_index("request_id").loc["b"]
    assert (row["score"], row["x"], row["plan"], row["arm"]) == (0.99, 42.5, "gold", "challenger")
    assert row["ts"] == later

    store.upsert_outcomes("churn", outcomes(["a", "b"], ts[:2], [0, 0]))
    store.upsert_outcomes("churn", outcomes(["b"], [ts[2]], [1]))
    expected = expected_outcomes(["a", "b"], [ts[0], ts[2]], [0.0, 1.0])
    pd.testing.assert_frame_equal(store.read_outcomes("churn"), expected)


def test_a_batch_repeating_a_request_id_keeps_its_last_row(store):
    ts = [DAY, DAY + US, DAY + 2 * US]
    store.upsert_outcomes("churn", outcomes(["a", "b", "a"], ts, [0, 0, 1]))
    pd.testing.assert_frame_equal(store.read_outcomes("churn"), expected_outcomes(["b", "a"], ts[1:], [0.0, 1.0]))
    store.upsert_predictions("churn", predictions(["p", "p"], ts[:2], score=[0.1, 0.7]), ["x", "plan"])
    assert store.read_predictions("churn")["score"].tolist() == [0.7]


def test_models_do_not_see_each_other(store):
    store.upsert_outcomes("churn", outcomes(["same-id"], [DAY], [1]))
    store.upsert_outcomes("fraud", outcomes(["same-id"], [DAY + US], [0]))
    assert store.read_outcomes("churn")["label"].tolist() == [1.0]
    assert store.read_outcomes("fraud", request_ids=["same-id"])["label"].tolist() == [0.0]
    assert store.read_predictions("fraud").empty


# --- corrections: the rule, atomically -----------------------------------------------------------------

RULE_TIMES = [DAY, DAY + US]
RULE_KEYS = ["", "2026-11-03/612e637376/000000000002", "2026-11-03/612e637376/000000000010",
             "2026-11-03/612e6373762e677a/000000000001", "2026-11-04/61/000000000001"]


def test_an_outcome_replaces_the_stored_one_exactly_when_the_rule_says_so(store):
    """Every pair of (outcome time, landing key), stored then written: the store agrees with corrections.wins."""
    cases = list(itertools.product(itertools.product(RULE_TIMES, RULE_KEYS), repeat=2))  # (stored, new)
    ids = [f"r{i:03d}" for i in range(len(cases))]
    stored = outcomes(ids, [o[0] for o, _ in cases], [0] * len(cases), [o[1] for o, _ in cases])
    new = outcomes(ids, [n[0] for _, n in cases], [1] * len(cases), [n[1] for _, n in cases])
    assert store.upsert_outcomes("churn", stored) == len(cases)
    replaced = [bool(wins(n[0], n[1], o[0], o[1])) for o, n in cases]
    assert 0 < sum(replaced) < len(cases)
    assert store.upsert_outcomes("churn", new) == sum(replaced)  # the rows written, not the rows offered

    got = store.read_outcomes("churn").set_index("request_id").loc[ids]
    winners = [n if r else o for (o, n), r in zip(cases, replaced)]
    assert got["label"].tolist() == [1.0 if r else 0.0 for r in replaced]
    assert got["ts"].tolist() == [t for t, _ in winners]
    assert got["landing_key"].tolist() == [k for _, k in winners]


def test_the_label_never_decides_and_a_batch_is_reduced_by_the_rule(store):
    # the old rule kept the larger label at equal times: a 1 -> 0 fix landed later must win
    store.upsert_outcomes("churn", outcomes(["fix"], [DAY], [1], ["2026-11-03/61/000000000001"]))
    store.upsert_outcomes("churn", outcomes(["fix"], [DAY], [0], ["2026-11-04/61/000000000001"]))
    # in one batch, the later outcome time wins whatever its place (it is not "the last row wins")
    store.upsert_outcomes("churn", outcomes(["b", "b"], [DAY + US, DAY], [1, 0], ["k", "k"]))
    pd.testing.assert_frame_equal(
        store.read_outcomes("churn"),
        expected_outcomes(["fix", "b"], [DAY, DAY + US], [0.0, 1.0], ["2026-11-04/61/000000000001", "k"]))


def test_two_writers_racing_end_with_the_rules_winner_for_every_id(make_store):
    """Two clients write conflicting outcomes for the same ids at the same time, in opposite orders, in small
    batches (each its own transaction), round after round: the store holds the rule's winner for every id."""
    first = make_store()
    writers = [first, make_store(same_as=first)]
    ids = [f"r{i:03d}" for i in range(120)]
    rng = np.random.default_rng(8)
    for rnd in range(12):
        base = DAY + pd.Timedelta(hours=rnd)  # later than every earlier round: the round's own outcomes decide
        offsets = rng.integers(0, 2, (2, len(ids)))
        times = [list(base + pd.to_timedelta(offsets[w], unit="us")) for w in (0, 1)]
        keys = np.array(RULE_KEYS[1:], dtype=object)[rng.integers(0, len(RULE_KEYS) - 1, (2, len(ids)))]
        tie = (offsets[0] == offsets[1]) & (keys[0] == keys[1])
        keys[1][tie] = RULE_KEYS[0]  # equal (time, key) pairs have no winner but the later write: not raced here
        frames = [outcomes(ids, times[w], [w] * len(ids), keys[w]) for w in (0, 1)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(w: int) -> None:
            try:
                rows = frames[w] if w == 0 else frames[w].iloc[::-1]
                barrier.wait()
                for i in range(0, len(rows), 15):
                    writers[w].upsert_outcomes("churn", rows.iloc[i : i + 15])
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        second_wins = [bool(wins(times[1][i], keys[1][i], times[0][i], keys[0][i])) for i in range(len(ids))]
        got = first.read_outcomes("churn").set_index("request_id").loc[ids]
        assert got["label"].tolist() == [float(w) for w in second_wins], f"round {rnd}"
        assert got["landing_key"].tolist() == [keys[int(w)][i] for i, w in enumerate(second_wins)], f"round {rnd}"


# --- windows and request ids --------------------------------------------------------------------------


def test_windows_are_half_open_to_the_microsecond(store):
    start, end = DAY + pd.Timedelta(microseconds=500), DAY + pd.Timedelta(hours=1, microseconds=500)
    # Neighbours share the boundary's millisecond: a store that kept only milliseconds would get them wrong.
    ts = [start - US, start, start + US, end - US, end, end + US]
    ids = [f"r{i}" for i in range(len(ts))]
    store.upsert_predictions("churn", predictions(ids, ts), ["x", "plan"])
    store.upsert_outcomes("churn", outcomes(ids, ts, [1] * len(ts)))

    for read in (store.read_predictions, store.read_outcomes):
        assert read("churn", start, end)["request_id"].tolist() == ["r1", "r2", "r3"]
        assert read("churn", start=start)["request_id"].tolist() == ids[1:]
        assert read("churn", end=end)["request_id"].tolist() == ids[:4]
        assert read("churn")["request_id"].tolist() == ids
        assert read("churn", start, start).empty


def test_rows_are_sorted_by_time_then_request_id_as_bytes(store):
    ids = ["b", "B", "a", "_1", "-1", "A", "a10", "a9", "é"]
    store.upsert_outcomes("churn", outcomes(ids, [DAY] * len(ids), [0] * len(ids)))
    store.upsert_outcomes("churn", outcomes(["0-earlier"], [DAY - US], [1]))
    store.upsert_predictions("churn", predictions(ids, [DAY] * len(ids)), ["x", "plan"])
    assert store.read_outcomes("churn")["request_id"].tolist() == ["0-earlier", *sorted(ids)]
    assert store.read_predictions("churn")["request_id"].tolist() == sorted(ids)


def test_reads_by_request_ids(store):
    ts = [DAY + pd.Timedelta(hours=i) for i in range(6)]
    ids = [f"r{i}" for i in range(6)]
    store.upsert_predictions("churn", predictions(ids, ts), ["x", "plan"])
    store.upsert_outcomes("churn", outcomes(ids, ts, [0, 1, 0, 1, 0, 1]))

    wanted = ["r4", "r1", "unknown", "r1"]  # any order, unknown and repeated ids are fine
    assert store.read_predictions("churn", request_ids=wanted)["request_id"].tolist() == ["r1", "r4"]
    got = store.read_outcomes("churn", request_ids=iter(wanted))
    pd.testing.assert_frame_equal(got, expected_outcomes(["r1", "r4"], [ts[1], ts[4]], [1.0, 0.0]))
    # ids and a window together: both must hold
    assert store.read_outcomes("churn", ts[2], ts[5], request_ids=wanted)["request_id"].tolist() == ["r4"]
    assert store.read_predictions("churn", request_ids=[]).empty


@pytest.mark.parametrize("how", ["empty store", "window without rows", "no request ids"])
def test_empty_reads_keep_the_columns_and_dtypes(store, how):
    if how != "empty store":
        store.upsert_predictions("churn", predictions(["a"], [DAY]), ["x", "plan"])
        store.upsert_outcomes("churn", outcomes(["a"], [DAY], [1]))
    kwargs = {
        "empty store": {},
        "window without rows": {"start": DAY + pd.Timedelta(days=1), "end": DAY + pd.Timedelta(days=2)},
        "no request ids": {"request_ids": []},
    }[how]
    preds = store.read_predictions("churn", **kwargs)
    outs = store.read_outcomes("churn", **kwargs)
    assert preds.empty and outs.empty
    assert list(preds.columns) == list(PREDICTION_COLUMNS)
    assert preds.dtypes.astype(str).to_dict() == PREDICTION_DTYPES
    assert list(outs.columns) == list(OUTCOME_COLUMNS)
    assert outs.dtypes.astype(str).to_dict() == OUTCOME_DTYPES


# --- features -----------------------------------------------------------------------------------------

TRICKY_FLOATS = [0.1 + 0.2, 1e-20, 123456789.12345679, 2.0, -0.0, 1 / 3]


def test_features_round_trip_with_their_types_and_nulls(store):
    n = len(TRICKY_FLOATS)
    ids = [f"r{i}" for i in range(n)]
    df = predictions(ids, [DAY + i * US for i in range(n)])
    features = {
        "tenure": [0, 7, -3, 2**40, 12, 5],                                  # int
        "calls": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),             # int with a null
        "charges": TRICKY_FLOATS,                                            # float, exact
        "total": [1.5, np.nan, 2.25, np.inf, 3.0, 4.0],                      # float; NaN and inf are null
        "plan": pd.Categorical(["basic", "premium", "basic", "basic", "premium", "basic"]),  # category
        "month": ["2026-11-01", None, "2026-12-01", "2026-11-01", "x", "2027-01-01"],  # strings that look like dates
        "autopay": [True, False, True, True, False, False],                  # bool
        "paper": [True, None, False, True, None, False],                     # bool with nulls
        "unused": [None] * n,                                                # never set
    }
    for name, values in features.items():
        df[name] = values
    names = list(features)
    df = df.drop(columns=["x"])
    store.upsert_predictions("churn", df, names)

    got = store.read_predictions("churn")
    expected = pd.DataFrame(
        {
            "request_id": pd.Series(ids, dtype=object),
            "entity_id": pd.Series([f"e-{i}" for i in ids], dtype=object),
            "ts": pd.Series([DAY + i * US for i in range(n)], dtype="datetime64[ns, UTC]"),
            "model_version": pd.Series(["3"] * n, dtype=object),
            "arm": pd.Series(["champion"] * n, dtype=object),
            "prediction": df["prediction"].astype("float64"),
            "score": df["score"].astype("float64"),
            "tenure": pd.Series([0, 7, -3, 2**40, 12, 5], dtype="int64"),
            "calls": pd.Series([1, np.nan, 3, 4, 5, 6], dtype="float64"),
            "charges": pd.Series(TRICKY_FLOATS, dtype="float64"),
            "total": pd.Series([1.5, np.nan, 2.25, np.nan, 3.0, 4.0], dtype="float64"),
            "plan": pd.Series(["basic", "premium", "basic", "basic", "premium", "basic"], dtype=object),
            "month": pd.Series(["2026-11-01", None, "2026-12-01", "2026-11-01", "x", "2027-01-01"], dtype=object),
            "autopay": pd.Series([True, False, True, True, False, False], dtype=bool),
            "paper": pd.Series([True, None, False, True, None, False], dtype=object),
            "unused": pd.Series([None] * n, dtype=object),
        }
    )
    pd.testing.assert_frame_equal(got, expected)
    # exact to the bit, not just close
    assert [v.hex() for v in got["charges"]] == [v.hex() for v in TRICKY_FLOATS]
    assert np.signbit(got["charges"].iloc[4])


def test_pandas_nullable_dtypes_are_accepted(store):
    df = predictions(["a", "b"], [DAY, DAY + US])
    df["entity_id"] = pd.array(["e1", None], dtype="string")
    df["arm"] = pd.array(["champion", pd.NA], dtype="string")
    df["score"] = pd.array([0.5, None], dtype="Float64")
    df["x"] = pd.array([True, None], dtype="boolean")
    store.upsert_predictions("churn", df, ["x", "plan"])
    got = store.read_predictions("churn")
    assert got["entity_id"].tolist() == ["e1", None]
    assert got["arm"].tolist() == ["champion", None]
    assert got["score"].iloc[0] == 0.5 and np.isnan(got["score"].iloc[1])
    assert got["x"].tolist() == [True, None]


def test_a_model_without_features(store):
    store.upsert_predictions("churn", predictions(["a"], [DAY]).drop(columns=["x", "plan"]), [])
    got = store.read_predictions("churn")
    assert list(got.columns) == list(PREDICTION_COLUMNS)
    assert got["request_id"].tolist() == ["a"]


def test_simulated_traffic_reads_back_as_written(store):
    from evergreen.config import get_config
    from evergreen_demo.simulate import simulate_day

    model = get_config().model("churn")
    day = simulate_day(model, DAY.date(), 300)
    store.upsert_predictions("churn", day.predictions, model.feature_names)
    got = store.read_predictions("churn", DAY, DAY + pd.Timedelta(days=1))
    written = day.predictions.sort_values(["ts", "request_id"], ignore_index=True)
    pd.testing.assert_frame_equal(got, written, check_dtype=False)
    assert got["total_charges"].isna().any()  # the nullable feature kept its nulls


# --- timestamps -----------------------------------------------------------------------------------------


def test_timestamps_come_out_utc_and_naive_ones_go_in_as_utc(store):
    naive = dt.datetime(2026, 11, 2, 10, 30, 0, 123456)
    other_zone = pd.Timestamp("2026-11-02 12:30:00.123457", tz="Europe/Paris")  # 11:30:00.123457 UTC
    store.upsert_outcomes("churn", pd.DataFrame(
        {"request_id": ["naive", "paris", "text"], "ts": [naive, other_zone, "2026-11-02T13:00:00+01:00"],
         "label": [0, 1, 1]}))
    # ISO 8601 text in several forms within one column
    store.upsert_outcomes("churn", pd.DataFrame(
        {"request_id": ["iso-1", "iso-2"], "ts": ["2026-11-02T13:00:00.5+01:00", "2026-11-02 13:00"], "label": [1, 0]}))
    got = store.read_outcomes("churn")
    assert str(got["ts"].dtype) == "datetime64[ns, UTC]"
    assert got["ts"].tolist() == [
        pd.Timestamp("2026-11-02 10:30:00.123456", tz="UTC"),
        pd.Timestamp("2026-11-02 11:30:00.123457", tz="UTC"),
        pd.Timestamp("2026-11-02 12:00:00", tz="UTC"),
        pd.Timestamp("2026-11-02 12:00:00.5", tz="UTC"),
        pd.Timestamp("2026-11-02 13:00:00", tz="UTC"),
    ]
    # naive window bounds are UTC too
    assert store.read_outcomes("churn", naive, naive + dt.timedelta(microseconds=1))["request_id"].tolist() == ["naive"]

    store.put_record(Record("drift", "churn/2026-11-02", "churn", naive, {}))
    got = store.get_record("drift", "churn/2026-11-02")
    assert got.ts == dt.datetime(2026, 11, 2, 10, 30, 0, 123456, tzinfo=dt.timezone.utc)
    assert got.ts.utcoffset() == dt.timedelta(0)


# --- records ---------------------------------------------------------------------------------------------


def record(kind, model, day, payload=None, key=None) -> Record:
    day = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    return Record(kind, key or f"{model}/{day:%Y-%m-%d}", model, day, payload or {"day": f"{day:%Y-%m-%d}"})


def test_records_put_get_list_delete(store):
    days = [dt.date(2026, 11, d) for d in (3, 1, 2)]
    for d in days:
        store.put_record(record("drift", "churn", d))
    store.put_record(record("drift", "fraud", days[0]))
    store.put_record(record("performance", "churn", days[0]))
    payload = {"nested": {"evergreen.status": "candidate", "$weird": [1, 2.5, None]}, "n": 3, "ok": True}
    store.put_record(record("drift", "churn", days[0], payload))  # upsert replaces

    got = store.get_record("drift", "churn/2026-11-03")
    assert got == Record("drift", "churn/2026-11-03", "churn",
                         dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc), payload)
    assert store.get_record("drift", "churn/1999-01-01") is None

    keys = [r.key for r in store.list_records("drift")]
    assert keys == ["churn/2026-11-01", "churn/2026-11-02", "churn/2026-11-03", "fraud/2026-11-03"]
    assert [r.key for r in store.list_records("drift", model="churn", start=dt.datetime(2026, 11, 2),
                                              end=dt.datetime(2026, 11, 3))] == ["churn/2026-11-02"]
    assert store.list_records("ledger") == []

    assert store.delete_records("drift", "churn", dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 4)) == 2
    assert [r.key for r in store.list_records("drift")] == ["churn/2026-11-01", "fraud/2026-11-03"]
    assert store.get_record("performance", "churn/2026-11-03") is not None  # other kinds untouched
    assert store.delete_records("drift", "churn", dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 4)) == 0


def test_append_only_records_never_change(store):
    entry = Record("ledger", "churn/0001", "churn", dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc),
                   {"action": "promote", "version": "3", "previous": "2"})
    store.put_record(entry, append_only=True)
    # a retry writing the same payload (keys in any order) is a no-op
    store.put_record(Record(entry.kind, entry.key, entry.model, entry.ts,
                            {"previous": "2", "version": "3", "action": "promote"}), append_only=True)
    with pytest.raises(RecordConflict, match="ledger/churn/0001"):
        store.put_record(Record(entry.kind, entry.key, entry.model, entry.ts, {"action": "rollback"}), append_only=True)
    assert store.get_record("ledger", "churn/0001") == entry
    assert len(store.list_records("ledger")) == 1


# --- bad input -------------------------------------------------------------------------------------------


def test_missing_columns_are_named_with_the_model(store):
    df = predictions(["a"], [DAY]).drop(columns=["score"])
    with pytest.raises(StoreError, match=r"model 'churn'.*\['score', 'tenure'\]"):
        store.upsert_predictions("churn", df, ["x", "tenure"])
    with pytest.raises(StoreError, match=r"model 'churn'.*\['label'\]"):
        store.upsert_outcomes("churn", pd.DataFrame({"request_id": ["a"], "ts": [DAY]}))
    assert store.read_predictions("churn").empty and store.read_outcomes("churn").empty


@pytest.mark.parametrize(
    "change, message",
    [
        ({"request_id": ["a", None]}, r"1 predictions rows for model 'churn' have no 'request_id'"),
        ({"ts": [DAY, None]}, r"1 predictions rows for model 'churn' have no 'ts'"),
        ({"ts": [DAY, "yesterday-ish"]}, r"model 'churn'.*'ts'.*not a timestamp"),
        ({"score": [0.5, "high"]}, r"model 'churn'.*'score' must be numeric"),
        ({"x": [1.0, "n/a"]}, r"feature 'x' of model 'churn'"),
        ({"request_id": ["a", "r" * 129]}, r"model 'churn'.*'request_id'.*longer than 128"),
    ],
    ids=["null request id", "null ts", "bad ts", "text score", "mixed feature", "long request id"],
)
def test_bad_prediction_rows_fail_the_call_and_write_nothing(store, change, message):
    df = predictions(["a", "b"], [DAY, DAY + US])
    for column, values in change.items():
        df[column] = values
    with pytest.raises(StoreError, match=message):
        store.upsert_predictions("churn", df, ["x", "plan"])
    assert store.read_predictions("churn").empty


def test_features_named_like_store_columns_are_refused(store):
    with pytest.raises(StoreError, match=r"model 'churn'.*\['score'\]"):
        store.upsert_predictions("churn", predictions(["a"], [DAY]), ["x", "score"])


def test_a_non_numeric_label_is_refused(store):
    with pytest.raises(StoreError, match=r"outcomes for model 'churn'.*'label' must be numeric"):
        store.upsert_outcomes("churn", outcomes(["a"], [DAY], ["yes"]))
    store.upsert_outcomes("churn", outcomes(["a"], [DAY], [None]))  # a missing label is a null, not an error
    assert store.read_outcomes("churn")["label"].isna().tolist() == [True]


# --- volume ----------------------------------------------------------------------------------------------


def test_a_large_batch_crosses_chunk_boundaries(backend, make_store):
    # SQL writes in chunks of 50,000 rows and MongoDB in bulk batches; mongomock scans its whole collection for
    # every upsert (quadratic), so it runs the same code with small batches and fewer rows.
    if backend == "mongomock":
        store, n = make_store(batch_size=100), 300
    else:
        store, n = make_store(), 120_000
    ids = np.char.add("r", np.arange(n).astype(str)).astype(object)
    ts = DAY + pd.to_timedelta(np.arange(n), unit="ms")
    labels = np.arange(n) % 2
    assert store.upsert_outcomes("churn", pd.DataFrame({"request_id": ids, "ts": ts, "label": labels})) == n
    # rewrite an overlapping slice with flipped labels plus new rows: replaced, not duplicated
    lo, hi = n // 3, n + n // 10
    ids2 = np.char.add("r", np.arange(lo, hi).astype(str)).astype(object)
    ts2 = DAY + pd.to_timedelta(np.arange(lo, hi), unit="ms")
    store.upsert_outcomes("churn", pd.DataFrame({"request_id": ids2, "ts": ts2, "label": 1 - np.arange(lo, hi) % 2}))

    got = store.read_outcomes("churn")
    assert len(got) == hi
    assert got["ts"].is_monotonic_increasing
    expected_labels = np.where(np.arange(hi) < lo, np.arange(hi) % 2, 1 - np.arange(hi) % 2)
    assert (got["label"].to_numpy() == expected_labels).all()
    by_id = store.read_outcomes("churn", request_ids=ids2[::-1])
    assert by_id["request_id"].tolist() == ids2.tolist()

    preds = pd.DataFrame({"request_id": ids, "entity_id": ids, "ts": ts, "model_version": "1", "arm": "champion",
                          "prediction": labels.astype(float), "score": labels * 0.5, "x": np.arange(n) * 0.25})
    assert store.upsert_predictions("churn", preds, ["x"]) == n
    # rows on both sides of every chunk edge keep their own features
    edges = sorted({0, 99, 100, 199, 200, 49_999, 50_000, 99_999, 100_000, n - 1} & set(range(n)))
    got = store.read_predictions("churn", request_ids=ids[edges])
    assert got["x"].tolist() == [i * 0.25 for i in edges]
