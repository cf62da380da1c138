"""evergreen.corrections: the one rule that decides which outcome of a request id wins, its landing keys, and the
lake read that applies it (the store's side is in tests/plugins/evergreen/store/test_contract.py)."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from evergreen import corrections, lake
from evergreen.corrections import landing_key, latest, read_labelled, winner_positions, wins

DAY = dt.date(2026, 11, 3)
T = pd.Timestamp("2026-11-03T10:00:00Z")


# --- landing keys -------------------------------------------------------------------------------------------------


def test_landing_keys_sort_by_day_then_file_name_by_code_point_then_row():
    names = ["a.csv", "a.csv.gz", "a-1.csv", "a_b.csv", "B.csv", "b.csv", "é.csv", "a.csv ", "z"]
    ordered = [(d, n, r) for d in (DAY, DAY + dt.timedelta(days=1)) for n in sorted(names) for r in (1, 2, 10, 999)]
    keys = [landing_key(d, n, r) for d, n, r in ordered]
    assert keys == sorted(keys)  # string order is the landing order
    assert sorted(keys, key=lambda k: k.encode()) == keys  # and byte order (SQLite, PostgreSQL "C", MongoDB) too
    # a name followed by a plain separator would sort "a.csv.gz" before "a.csv": the hex encoding does not
    assert landing_key(DAY, "a.csv", 9) < landing_key(DAY, "a.csv.gz", 1)
    assert landing_key(DAY, "x.csv", 12) == "2026-11-03/782e637376/000000000012"
    assert corrections.describe_key(landing_key(DAY, "é.csv", 12)) == "dt=2026-11-03 é.csv row 12"
    assert list(corrections.landing_keys(DAY, ["x.csv", "y.csv"], [12, 3])) == [
        landing_key(DAY, "x.csv", 12), landing_key(DAY, "y.csv", 3)]
    with pytest.raises(ValueError, match="row number -1"):
        landing_key(DAY, "x.csv", -1)


# --- the rule -----------------------------------------------------------------------------------------------------


def test_the_latest_time_wins_then_the_later_landing_never_the_label():
    early, late = T, T + pd.Timedelta(microseconds=1)
    k1, k2 = landing_key(DAY, "a.csv", 1), landing_key(DAY, "b.csv", 1)
    assert wins(late, k1, early, k2)  # a later outcome time beats a later landing
    assert not wins(early, k2, late, k1)
    assert wins(early, k2, early, k1)  # same time: the later landing
    assert not wins(early, k1, early, k2)
    assert wins(early, k1, early, k1)  # the same row again: the later write (a re-run rewrites it)
    assert wins(early, k1, early, "")  # an outcome of unknown landing sorts before every landing


def test_latest_keeps_what_folding_wins_over_the_rows_in_order_keeps():
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame({
        "request_id": rng.choice([f"r{i}" for i in range(60)], n),
        "outcome_ts": T + pd.to_timedelta(rng.integers(0, 3, n), unit="s"),
        "landing_key": rng.choice(["", "k1", "k2", "k3"], n),
        "label": rng.integers(0, 2, n),
        "row": np.arange(n),
    })
    held: dict[str, tuple] = {}
    for r in frame.itertuples(index=False):
        old = held.get(r.request_id)
        if old is None or wins(r.outcome_ts, r.landing_key, old[0], old[1]):
            held[r.request_id] = (r.outcome_ts, r.landing_key, r.row)
    kept = latest(frame)
    assert kept["request_id"].is_unique
    assert sorted(kept["row"]) == sorted(v[2] for v in held.values())
    assert kept["row"].is_monotonic_increasing  # the winners keep their order
    positions = winner_positions(frame["request_id"], frame["outcome_ts"], frame["landing_key"])
    assert (frame["row"].to_numpy()[positions] == frame["request_id"].map(lambda r: held[r][2]).to_numpy()).all()


def test_latest_on_unique_ids_and_without_keys():
    frame = pd.DataFrame({"request_id": ["a", "b"], "outcome_ts": [T, T], "label": [1, 0]})
    pd.testing.assert_frame_equal(latest(frame), frame)
    twice = pd.DataFrame({"request_id": ["a", "a"], "outcome_ts": [T, T], "label": [1, 0]})
    assert latest(twice)["label"].tolist() == [0]  # no keys: the later row wins a tie
    assert latest(frame.iloc[:0]).empty


# --- the lake read ------------------------------------------------------------------------------------------------


def _partition(root: str, day: dt.date, rows: list[tuple], keyed: bool = True) -> None:
    frame = pd.DataFrame(rows, columns=["request_id", "outcome_ts", "label"])
    frame["outcome_ts"] = pd.to_datetime(frame["outcome_ts"], utc=True)
    if keyed:
        frame["landing_key"] = [landing_key(day, "o.csv", i + 1) for i in range(len(frame))]
    lake.write_parquet_atomic(frame, lake.labelled_path("churn", day, root))


def test_read_labelled_keeps_one_row_per_request_by_the_rule(tmp_path):
    root = str(tmp_path)
    first, second, third = DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    _partition(root, first, [("fixed", T, 1), ("later-time", T + pd.Timedelta("1h"), 1), ("alone", T, 0)])
    # a 1 -> 0 fix with the same outcome time lands a day later; a "correction" with an earlier time loses
    _partition(root, second, [("fixed", T, 0), ("later-time", T, 0)])
    _partition(root, third, [("fixed", T, 1)])  # outside the window below: not seen

    frame, parts = read_labelled("churn", first, third, root)
    assert parts == [lake.labelled_path("churn", d, root) for d in (first, second)]
    got = frame.set_index("request_id")["label"].to_dict()
    assert got == {"fixed": 0, "later-time": 1, "alone": 0}
    assert read_labelled("churn", first, third + dt.timedelta(days=1), root)[0].set_index(
        "request_id").loc["fixed", "label"] == 1
    empty, none = read_labelled("churn", DAY - dt.timedelta(days=9), DAY, root)
    assert empty.empty and none == []


def test_read_labelled_orders_partitions_written_before_landing_keys_by_their_day(tmp_path):
    root = str(tmp_path)
    first, second = DAY, DAY + dt.timedelta(days=1)
    _partition(root, first, [("r", T, 1), ("s", T, 1)], keyed=False)
    _partition(root, second, [("r", T, 0)], keyed=False)
    frame, _ = read_labelled("churn", first, second + dt.timedelta(days=1), root)
    assert frame.set_index("request_id")["label"].to_dict() == {"r": 0, "s": 1}
    assert set(frame["landing_key"]) == {"2026-11-03/", "2026-11-04/"}
    # an old partition's rows sort before any keyed landing of the same day, after every earlier day's
    assert "2026-11-03/" < landing_key(first, "a", 1) < "2026-11-04/"


@pytest.mark.parametrize("n_days", [1, 3])
def test_a_window_without_repeats_reads_back_unchanged(tmp_path, n_days):
    root = str(tmp_path)
    days = [DAY + dt.timedelta(days=i) for i in range(n_days)]
    for i, day in enumerate(days):
        _partition(root, day, [(f"r{i}-{j}", T, j % 2) for j in range(5)])
    frame, _ = read_labelled("churn", days[0], days[-1] + dt.timedelta(days=1), root)
    expected = pd.concat([lake.read_parquet(lake.labelled_path("churn", d, root)) for d in days], ignore_index=True)
    pd.testing.assert_frame_equal(frame, expected)
    assert list(itertools.chain.from_iterable([[f"r{i}-{j}" for j in range(5)] for i in range(n_days)])) == \
        frame["request_id"].tolist()
