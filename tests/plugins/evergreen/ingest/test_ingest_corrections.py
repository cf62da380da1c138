"""Ground-truth ingestion under the one correction rule (evergreen.corrections): a same-day correction replaces the
row it corrects (quarantined as ``superseded``), an identical repeat is still a duplicate, a correction on a later
day wins in the store and in every lake read alike, whatever order or interleaving the runs happen in.
"""

from __future__ import annotations

import datetime as dt
import threading

import pandas as pd
from ingest_env import DAY, MODEL, NEXT, Env, logged_day, make_env, outcome_csv_frame

from evergreen.corrections import LANDING_KEY, landing_key, read_labelled
from evergreen.store.sql import SqlStore

LABEL, TS, RID = MODEL.label.name, MODEL.timestamp, MODEL.request_id


def _stored(env: Env) -> pd.DataFrame:
    return env.store.read_outcomes(MODEL.name).set_index("request_id")


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- within one landing day ---------------------------------------------------------------------------------------


def test_a_same_day_correction_in_a_later_file_replaces_the_row_it_corrects(env):
    d = logged_day(env, 5)
    frame = outcome_csv_frame(d)
    fixes = frame.iloc[[0, 1]].copy()
    fixes[LABEL] = 1 - fixes[LABEL]
    t0, t1 = pd.Timestamp(frame[TS].iloc[0]), pd.Timestamp(frame[TS].iloc[1])
    fixes.loc[fixes.index[0], TS] = _iso(t0 + pd.Timedelta("1min"))  # a later outcome time: wins
    fixes.loc[fixes.index[1], TS] = _iso(t1 - pd.Timedelta("1us"))  # an earlier one: loses, though landed later
    env.land(DAY, "a.csv", frame)
    env.land(DAY, "b.csv", fixes)

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.reasons) == (5, 2, {"superseded": 2})
    q = env.quarantine().set_index(["source_file", "row_number"])["reason"]
    a, b = (f for f in result.files)
    assert f"replaced by the outcome at b.csv row 1 (a later outcome time, {_iso(t0 + pd.Timedelta('1min'))[:-8]}" \
        in q[(a, 1)]
    assert "replaced by the outcome at a.csv row 2 (a later outcome time" in q[(b, 2)]
    # the store and the lake hold the same winner, with the landing key of where it came from
    ids = frame[RID].tolist()
    expected = [1 - frame[LABEL].iloc[0], *frame[LABEL].iloc[1:]]
    assert _stored(env).loc[ids, "label"].astype(int).tolist() == expected
    lab = env.labelled().set_index("request_id").loc[ids]
    assert lab["label"].tolist() == expected
    assert lab[LANDING_KEY].tolist() == [landing_key(DAY, "b.csv", 1),
                                         *(landing_key(DAY, "a.csv", i) for i in range(2, 6))]
    assert _stored(env).loc[ids, LANDING_KEY].tolist() == lab[LANDING_KEY].tolist()


def test_the_same_time_later_row_wins_and_an_identical_repeat_is_a_duplicate(env):
    d = logged_day(env, 4)
    frame = outcome_csv_frame(d)
    fix = frame.iloc[[0]].assign(**{LABEL: 1 - frame[LABEL].iloc[0]})  # same time, later row: a correction
    env.land(DAY, "a.csv", pd.concat([frame, fix, frame.iloc[[2]]]))  # ... and row 3 again, identical
    env.land(DAY, "c.csv", frame.iloc[[2]])  # and once more in a later file

    (result,) = env.run()

    assert (result.landed, result.quarantined) == (4, 3)
    assert result.reasons == {"duplicate_request_id": 2, "superseded": 1}
    q = env.quarantine()
    codes = dict(zip(zip(q["source_file"].str.rsplit("/", n=1).str[-1], q["row_number"]), q["reason_code"]))
    assert codes == {("a.csv", 1): "superseded", ("a.csv", 3): "duplicate_request_id",
                     ("a.csv", 6): "duplicate_request_id"}
    assert q["reason"][q["reason_code"] == "superseded"].str.contains(
        "a.csv row 5 (the same outcome time, ", regex=False).all()
    assert q["reason"][q["reason_code"] == "duplicate_request_id"].str.contains("landed again at c.csv row 1", regex=False).all()
    assert int(_stored(env).loc[frame[RID].iloc[0], "label"]) == 1 - frame[LABEL].iloc[0]


# --- across landing days ------------------------------------------------------------------------------------------


def _one_to_zero(env: Env) -> str:
    """A request labelled 1 on DAY, fixed to 0 on NEXT with the same outcome time; returns its request id."""
    d = logged_day(env, 6)
    frame = outcome_csv_frame(d)
    frame.loc[frame.index[0], LABEL] = 1
    fix = frame.iloc[[0]].assign(**{LABEL: 0})
    env.land(DAY, "o.csv", frame)
    env.land(NEXT, "fix.csv", fix)
    return frame[RID].iloc[0]


def test_a_one_to_zero_fix_landed_later_wins_in_the_store_and_every_lake_read(env):
    rid = _one_to_zero(env)
    env.run(DAY, NEXT + dt.timedelta(days=1))
    # the store kept the larger label at equal times before: the fix must win, though its label is smaller
    assert int(_stored(env).loc[rid, "label"]) == 0
    # each day's partition keeps what landed that day ...
    assert env.labelled(DAY).set_index("request_id").loc[rid, "label"] == 1
    assert env.labelled(NEXT).set_index("request_id").loc[rid, "label"] == 0
    # ... and the reads that training and the drift reference use see one row, the store's
    window, _ = read_labelled(MODEL.name, DAY, NEXT + dt.timedelta(days=1), env.lake)
    assert window["request_id"].is_unique and len(window) == 6
    assert window.set_index("request_id").loc[rid, "label"] == 0
    state = env.digest([DAY, NEXT])
    env.run(DAY)  # a backfill of the older day reverts nothing
    assert env.digest([DAY, NEXT]) == state


def test_days_run_in_either_order_or_interleaved_end_in_the_same_store(env, tmp_path):
    rid = _one_to_zero(env)
    env.run(DAY)
    env.run(NEXT)
    expected = env.digest([DAY, NEXT])["store/outcomes"]

    reverse = make_env(tmp_path / "reverse")
    _one_to_zero(reverse)
    reverse.run(NEXT)
    reverse.run(DAY)
    assert reverse.digest([DAY, NEXT])["store/outcomes"] == expected
    reverse.store.close()

    # two runs of different intervals at once, each with its own store client, again and again: the store's
    # conditional upsert decides, not which run writes last
    racing = make_env(tmp_path / "racing")
    _one_to_zero(racing)
    clients = [racing.store, SqlStore(racing.store_uri)]
    for _ in range(4):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def run(day: dt.date, store: SqlStore) -> None:
            try:
                barrier.wait()
                Env(racing.root, store).run(day)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(day, store)) for day, store in zip((NEXT, DAY), clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert racing.digest([DAY, NEXT])["store/outcomes"] == expected
        assert int(racing.store.read_outcomes(MODEL.name, request_ids=[rid])["label"].iloc[0]) == 0
    clients[1].close()
    racing.store.close()
