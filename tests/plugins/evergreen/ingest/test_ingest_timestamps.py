"""Outcome timestamps (evergreen.ingest.contract): every value parsed on its own by the store's one rule
(``evergreen.store.base.to_utc``: naive means UTC, an offset converts that value only), microseconds kept and
nanoseconds truncated; an outcome later than the end of its landing day is ``future_timestamp``, one earlier than
its logged prediction is ``before_prediction``.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from ingest_env import DAY, MODEL, logged_day, outcome_csv_frame, reasons_by_id

from evergreen.ingest import contract
from evergreen.ingest import values as parse
from evergreen.store.base import to_utc
from evergreen_demo import simulate

UTC = dt.timezone.utc


def _history(n: int, day: dt.date = dt.date(2026, 10, 1)) -> pd.DataFrame:
    """A feature-carrying export of ``n`` rows (lands as-is, no logged prediction needed), ids h-0, h-1, ..."""
    frame = outcome_csv_frame(simulate.simulate_day(MODEL, day, n), with_features=True)
    frame[MODEL.request_id] = [f"h-{i}" for i in range(n)]
    return frame


def test_an_offset_does_not_leak_into_the_next_naive_value(env):
    frame = _history(4)
    frame[MODEL.timestamp] = ["2026-11-03T10:00+05:00", "2026-11-03T10:00", "2026-11-03T10:00:00Z",
                              "2026-11-03T10:00-03:00"]
    env.land(DAY, "mixed.csv", frame)

    (result,) = env.run()

    assert result.landed == 4
    got = env.labelled().set_index("request_id")["outcome_ts"]
    assert got.to_dict() == {
        "h-0": pd.Timestamp("2026-11-03T05:00Z"),
        "h-1": pd.Timestamp("2026-11-03T10:00Z"),  # naive is UTC (today's code gave 05:00Z from the row above)
        "h-2": pd.Timestamp("2026-11-03T10:00Z"),
        "h-3": pd.Timestamp("2026-11-03T13:00Z"),
    }
    stored = env.store.read_outcomes(MODEL.name).set_index("request_id")["ts"]
    assert (stored.loc[got.index] == got).all()


# ISO-8601 shapes exports carry; some pandas and Python's parser disagree on (and pandas leaks offsets between).
SHAPES = [
    "2026-11-03T10:00+05:00", "2026-11-03T10:00", "2026-11-03 10:00:01.5", "2026-11-03", "2026-11-03T10:00:00Z",
    "2026-11-03T10:00:00.123456789+01:00", "2026-11-03T10:00+0530", "20261103T1000", "  2026-11-03T10:00Z ",
    "2026-11-03T23:59:59.999999-02:00", "not-a-time", "2026-11", "2026-02-30", "2026-11-03T24:00", "",
]


def _by_the_rule(raw: str):
    try:
        return pd.Timestamp(to_utc(raw.strip()))
    except (ValueError, OverflowError):
        return pd.NaT


def _same(got, want) -> bool:
    return (got is pd.NaT and want is pd.NaT) or got == want


def _random_iso(rng) -> tuple[str, bool]:
    """An ISO-8601-ish time of a random shape (the shapes exports carry, and some that are not valid), and whether
    it carries a zone."""
    day = f"{rng.choice([1, 1970, 2026, 9999]):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}"
    time = rng.choice(["", "T{h}", "T{h}:{m}", " {h}:{m}:{s}", "T{h}:{m}:{s}.{f}"]).format(
        h=f"{rng.randint(0, 24):02d}", m=f"{rng.randint(0, 59):02d}", s=f"{rng.randint(0, 60):02d}",
        f="".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9))))
    zone = rng.choice(["", "", "Z", "+05:30", "-03:00", "+0100", "+14", "-23:59"]) if time else ""
    return day + time + zone, bool(zone)


def test_the_vectorised_and_the_per_value_paths_both_follow_the_stores_rule():
    import random

    rng = random.Random(8)
    drawn = [_random_iso(rng) for _ in range(1000)]
    values = [v for v, _ in drawn]
    def vectorised(column: list[str]) -> bool:
        return parse._parse_text_timestamps_fast(pd.Series(column, dtype=object)) is not None

    # one column per value (the vectorised path takes each value Arrow reads), then the values Arrow reads with
    # offsets only and naive only (vectorised), and all of them mixed (per value)
    columns = [[v] for v in values + SHAPES]
    arrow = [(v, zoned) for v, zoned in drawn if vectorised([v])]
    columns += [[v for v, z in arrow if z], [v for v, z in arrow if not z], values]
    assert len(arrow) > 300 and [vectorised(c) for c in columns[-3:]] == [True, True, False]
    for column in columns:
        parsed = parse._parse_timestamps(pd.Series(column, dtype=object))
        assert str(parsed.dtype) == "datetime64[us, UTC]"
        for raw, got in zip(column, parsed):
            assert _same(got, _by_the_rule(raw)), (raw, got, _by_the_rule(raw), len(column))


def test_every_value_is_parsed_by_the_stores_rule():
    parsed = parse._parse_timestamps(pd.Series(SHAPES, dtype=object))
    assert str(parsed.dtype) == "datetime64[us, UTC]"
    for raw, got in zip(SHAPES, parsed):
        assert _same(got, _by_the_rule(raw)), (raw, got, _by_the_rule(raw))
    # the same rule whatever order the values come in: nothing carries over from one row to the next
    backwards = parse._parse_timestamps(pd.Series(SHAPES[::-1], dtype=object))
    assert backwards[::-1].reset_index(drop=True).equals(parsed)
    # microseconds are kept and nanoseconds truncated, from text as from typed (Parquet) columns
    for s in (parsed[5:6], parse._parse_timestamps(pd.Series(pd.to_datetime(["2026-11-03T09:00:00.123456789Z"]))),
              parse._parse_timestamps(pd.Series(pd.to_datetime(["2026-11-03T09:00:00.123456789"])))):
        assert s.iloc[0] == pd.Timestamp("2026-11-03T09:00:00.123456Z") and str(s.dtype) == "datetime64[us, UTC]"
    # Python objects (a Parquet date column reads as datetime.date): a date is its midnight, like "2026-11-03"
    objects = parse._parse_timestamps(pd.Series([dt.date(2026, 11, 3), None, 1_700_000_000, float("nan")]))
    assert objects[0] == pd.Timestamp("2026-11-03T00:00Z") and objects[1:].isna().all()


FUTURE = {  # outcome time in a file landed on 2026-11-03 -> quarantined as future_timestamp?
    "2026-11-03T23:59:59.999999Z": False,
    "2026-11-04T00:00:00Z": True,  # the end of the landing day is already too late
    "2026-11-04T02:00+05:00": False,  # 21:00Z on the landing day
    "2026-11-03T20:00-05:00": True,  # 01:00Z the next day
    "2099-01-01T00:00:00Z": True,
    "9999-12-31T23:59:59+01:00": True,  # beyond pandas' nanosecond range: still a time, still future
}


def test_an_outcome_after_its_landing_day_is_future_timestamp(env):
    frame = _history(len(FUTURE))
    frame[MODEL.timestamp] = list(FUTURE)
    env.land(DAY, "o.csv", frame)

    (result,) = env.run()

    future = {f"h-{i}" for i, is_future in enumerate(FUTURE.values()) if is_future}
    assert (result.landed, result.quarantined, result.reasons) == (2, 4, {"future_timestamp": 4})
    got = reasons_by_id(env.quarantine())
    assert set(got) == future
    for i, value in enumerate(FUTURE):
        if f"h-{i}" in future:
            code, why = got[f"h-{i}"]
            for words in (repr(value), "2026-11-03", "2026-11-04T00:00:00Z", "dt= folder"):
                assert words in why, (words, why)
    assert not future & set(env.store.read_outcomes(MODEL.name)["request_id"])


def test_future_timestamp_is_named_with_other_problems_of_the_row(env):
    frame = _history(2).astype(object)
    frame.loc[0, MODEL.timestamp] = "2026-12-01T00:00:00Z"
    frame.loc[0, MODEL.label.name] = "7"
    env.land(DAY, "o.csv", frame)
    env.run()
    code, why = reasons_by_id(env.quarantine())["h-0"]  # the first check's code, every check's reason
    assert code == "future_timestamp" and "end of its landing day" in why and "'7' is not one of the classes" in why


def test_an_outcome_before_its_logged_prediction_is_before_prediction(env):
    d = logged_day(env, 6)
    out = outcome_csv_frame(d)
    rid = out.loc[2, MODEL.request_id]
    predicted = d.predictions.set_index("request_id").loc[rid, "ts"]
    early = predicted - pd.Timedelta(seconds=1)
    out.loc[2, MODEL.timestamp] = early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    same = out.loc[3, MODEL.request_id]  # at the prediction's own time: allowed
    out.loc[3, MODEL.timestamp] = d.predictions.set_index("request_id").loc[same, "ts"].strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    env.land(DAY, "o.csv", out)

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.reasons) == (5, 1, {"before_prediction": 1})
    q = env.quarantine()
    assert q["row_number"].tolist() == [3] and q["source_file"].iloc[0].endswith("/o.csv")
    code, why = reasons_by_id(q)[rid]
    assert code == "before_prediction" and repr(rid) in why
    assert parse._iso(early) in why and parse._iso(predicted) in why
    assert rid not in set(env.labelled()["request_id"])
    assert rid not in set(env.store.read_outcomes(MODEL.name)["request_id"])
    assert same in set(env.labelled()["request_id"])


def test_the_new_reason_codes_are_documented():
    for code in ("future_timestamp", "before_prediction", "unreadable_file"):
        assert code in contract.REASON_CODES
