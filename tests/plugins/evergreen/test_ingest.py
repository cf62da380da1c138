"""Ground-truth ingestion without Airflow: evergreen.ingest against a real SQLite store and a lake on local disk
(or an fsspec memory filesystem), with landed files written the way source systems export them.

Covers the contract (every kind of bad input is quarantined with its reason and valid rows still land), the
labelled partition (logged features joined, or the file's own), the stats record, and idempotency: ten re-runs,
SIGKILL at each write stage and at random points followed by a retry, and order-independent corrections.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from evergreen import ingest, lake
from evergreen_demo import simulate
from evergreen.config import IngestionPolicy, LabelSpec, get_config
from evergreen.store.sql import SqlStore

MODEL = get_config().model("churn")
PRED_DAY = dt.date(2026, 11, 2)
DAY = dt.date(2026, 11, 3)  # outcomes of PRED_DAY land here
NEXT = dt.date(2026, 11, 4)


@dataclasses.dataclass
class Env:
    root: Path
    store: SqlStore

    @property
    def landing(self) -> str:
        return str(self.root / "landing")

    @property
    def lake(self) -> str:
        return str(self.root / "lake")

    @property
    def store_uri(self) -> str:
        return self.store.uri

    def land(self, day: dt.date, name: str, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> str:
        """Write one outcome file into the day's landing folder (CSV or Parquet by the name's suffix)."""
        folder = Path(lake.landing_dir(MODEL.name, day, self.landing))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if raw is not None:
            path.write_bytes(raw)
        elif name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return str(path)

    def run(self, start: dt.date = DAY, end: dt.date | None = None, model=MODEL) -> list[ingest.DayResult]:
        return ingest.ingest_interval(model, start, end or start + dt.timedelta(days=1), self.store,
                                      landing_root=self.landing, lake_root=self.lake)

    def quarantine(self, day: dt.date = DAY) -> pd.DataFrame:
        return pd.read_parquet(lake.quarantine_path(MODEL.name, day, self.lake))

    def labelled(self, day: dt.date = DAY) -> pd.DataFrame:
        return pd.read_parquet(lake.labelled_path(MODEL.name, day, self.lake))

    def digest(self, days=(DAY,)) -> dict:
        return ingest.state_digest(self.store, MODEL.name, days, self.lake)


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    return Env(root, SqlStore(f"sqlite:///{root / 'store.db'}"))


@pytest.fixture
def env(tmp_path) -> Env:
    e = make_env(tmp_path / "env")
    yield e
    e.store.close()


def logged_day(env: Env, n: int = 50, day: dt.date = PRED_DAY) -> simulate.Day:
    """Log ``n`` predictions of ``day`` in the store (as the serving app does) and return the simulated day."""
    d = simulate.simulate_day(MODEL, day, n)
    env.store.upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)
    return d


def outcome_csv_frame(d: simulate.Day, with_features: bool = False) -> pd.DataFrame:
    """The outcome file a source system exports, timestamps as ISO-8601 text like a CSV carries them."""
    frame = simulate.outcome_file_frame(MODEL, d, with_features=with_features)
    frame[MODEL.timestamp] = frame[MODEL.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return frame


def reasons_by_id(q: pd.DataFrame) -> dict[str, tuple[str, str]]:
    raw = [json.loads(r) for r in q["raw"]]
    return {r.get(MODEL.request_id) if isinstance(r, dict) else None: (c, why)
            for r, c, why in zip(raw, q["reason_code"], q["reason"])}


# --- valid input -------------------------------------------------------------------------------------------------


def test_valid_outcomes_reach_store_lake_and_stats(env):
    d = logged_day(env, 40)
    env.land(DAY, "outcomes.csv", outcome_csv_frame(d))

    (result,) = env.run()

    assert (result.rows_read, result.landed, result.quarantined, result.unmatched) == (40, 40, 0, 0)
    stored = env.store.read_outcomes(MODEL.name).set_index("request_id").sort_index()
    truth = d.outcomes.set_index("request_id").sort_index()
    assert stored["label"].astype(int).tolist() == truth[MODEL.label.name].tolist()
    assert (stored["ts"] == truth["ts"]).all()

    lab = env.labelled().set_index("request_id").sort_index()
    preds = d.predictions.set_index("request_id").sort_index()
    assert list(env.labelled().columns) == ["request_id", "entity_id", "ts", "outcome_ts", "label", "model_version",
                                            "arm", "source", *MODEL.feature_names]
    assert (lab["source"] == "logged").all()
    assert (lab["ts"] == preds["ts"]).all() and (lab["outcome_ts"] == truth["ts"]).all()
    assert lab["entity_id"].tolist() == preds["entity_id"].tolist()
    assert lab["model_version"].tolist() == preds["model_version"].tolist()
    for name in MODEL.feature_names:  # the logged features, exactly
        pd.testing.assert_series_equal(lab[name], preds[name], check_dtype=False, check_names=False)
    assert len(env.quarantine()) == 0

    record = env.store.get_record("ingestion", f"churn/{DAY}")
    assert record.ts == dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc)
    assert record.payload == result.payload()
    assert record.payload["labelled_uri"] == lake.labelled_path("churn", DAY, env.lake)


def test_files_use_the_column_names_of_the_model_config(env):
    model = dataclasses.replace(MODEL, request_id="req", timestamp="observed_at", entity_id="account",
                                label=LabelSpec("will_leave", (0, 1)))
    d = logged_day(env, 5)
    frame = outcome_csv_frame(d).rename(columns={MODEL.request_id: "req", MODEL.timestamp: "observed_at",
                                                 MODEL.label.name: "will_leave"})
    env.land(DAY, "o.csv", frame)
    env.land(DAY, "old-names.csv", outcome_csv_frame(d))  # the default names are not this model's contract

    (result,) = env.run(model=model)

    assert (result.landed, result.reasons) == (5, {"missing_column": 5})
    assert "column 'req' is missing" in env.quarantine()["reason"].iloc[0]
    stored = env.store.read_outcomes(MODEL.name).set_index("request_id")["label"].astype(int).sort_index()
    assert stored.tolist() == frame.set_index("req")["will_leave"].sort_index().tolist()


def test_file_with_features_lands_as_is_and_parquet_types_are_read(env):
    """A history export carries the features itself (no logged prediction needed); Parquet keeps native types."""
    hist = simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 30)  # never logged in the store
    frame = simulate.outcome_file_frame(MODEL, hist, with_features=True)
    env.land(DAY, "history.parquet", frame)

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.unmatched) == (30, 0, 0)
    lab = env.labelled()
    assert (lab["source"] == "file").all()
    assert (lab["ts"] == lab["outcome_ts"]).all(), "a file's own features are dated by the outcome"
    assert lab["model_version"].isna().all() and lab["arm"].isna().all()
    assert lab["entity_id"].tolist() == frame[MODEL.entity_id].tolist()
    for name in MODEL.feature_names:
        pd.testing.assert_series_equal(lab[name], frame[name], check_dtype=False, check_names=False)
    assert len(env.store.read_outcomes(MODEL.name)) == 30


def test_csv_features_are_parsed_to_their_declared_types(env):
    """CSV text becomes typed columns with the fixed schema (ints as int64, bools as bool, categories as text)."""
    hist = simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 6)
    frame = outcome_csv_frame(hist, with_features=True).astype(str)
    frame["autopay"] = ["true", "False", "1", "0", "yes", "NO"]
    frame["total_charges"] = ["", "NA", "12.5", "null", "3", "1e2"]  # nullable: the usual null spellings
    env.land(DAY, "h.csv", frame)

    (result,) = env.run()

    assert result.quarantined == 0
    lab = env.labelled()
    assert lab["autopay"].tolist() == [True, False, True, False, True, False]
    assert lab["total_charges"].isna().tolist() == [True, True, False, True, False, False]
    assert lab["total_charges"].dropna().tolist() == [12.5, 3.0, 100.0]
    schema = pq.read_schema(lake.labelled_path("churn", DAY, env.lake))
    assert str(schema.field("tenure_months").type) == "int64" and str(schema.field("autopay").type) == "bool"
    assert str(schema.field("plan").type) == "string"


# --- bad input ---------------------------------------------------------------------------------------------------

# (request id, column, bad value, reason code, words the reason must contain)
ROW_PROBLEMS = [
    ("h-0", "tenure_months", "abc", "wrong_type", ["'tenure_months'", "'abc'", "not an int"]),
    ("h-1", "tenure_months", "2.5", "wrong_type", ["'2.5'", "not an int"]),
    ("h-2", "monthly_charges", "lots", "wrong_type", ["'monthly_charges'", "not a number"]),
    ("h-3", "tenure_months", "601", "out_of_range", ["'601'", "above the maximum 600"]),
    ("h-4", "monthly_charges", "-1", "out_of_range", ["below the minimum 0"]),
    ("h-5", "plan", "gold", "unknown_category", ["'gold'", "basic, standard, premium"]),
    ("h-6", "autopay", "maybe", "wrong_type", ["'maybe'", "not a bool"]),
    ("h-7", "region", "", "null_value", ["'region' is empty", "not nullable"]),
    ("h-8", "churned", "", "null_label", ["'churned' is empty"]),
    ("h-9", "churned", "2", "invalid_label", ["'2'", "classes 0, 1"]),
    ("h-10", "churned", "yes", "invalid_label", ["'yes'"]),
    ("h-11", "ts", "yesterday", "bad_timestamp", ["'yesterday'", "ISO-8601"]),
    ("h-12", "ts", "", "bad_timestamp", ["'ts' is empty"]),
]


def test_each_bad_row_is_quarantined_with_its_reason_and_valid_rows_land(env):
    hist = simulate.simulate_day(MODEL, dt.date(2026, 10, 1), len(ROW_PROBLEMS) + 5)
    frame = outcome_csv_frame(hist, with_features=True).astype(str)
    frame[MODEL.request_id] = [f"h-{i}" for i in range(len(frame))]
    for rid, column, value, _, _ in ROW_PROBLEMS:
        frame.loc[frame[MODEL.request_id] == rid, column] = value
    frame.loc[len(frame) - 1, MODEL.request_id] = ""  # a row without a request id
    env.land(DAY, "history.csv", frame)

    (result,) = env.run()

    q = env.quarantine()
    got = reasons_by_id(q)
    for rid, column, value, code, words in ROW_PROBLEMS:
        assert got[rid][0] == code, (rid, got[rid])
        for w in words:
            assert w in got[rid][1], (rid, w, got[rid][1])
    assert got[None][0] == "null_request_id"
    bad = len(ROW_PROBLEMS) + 1
    assert (result.rows_read, result.landed, result.quarantined) == (len(frame), len(frame) - bad, bad)
    assert sorted(env.labelled()["request_id"]) == sorted(f"h-{i}" for i in range(len(ROW_PROBLEMS), len(frame) - 1))
    assert result.reasons == dict(sorted(pd.Series([p[3] for p in ROW_PROBLEMS] + ["null_request_id"])
                                         .value_counts().items()))
    assert env.store.get_record("ingestion", f"churn/{DAY}").payload["reasons"] == result.reasons
    # the quarantine keeps where each row came from and the row exactly as it was in the file
    row = q[q["reason_code"] == "unknown_category"].iloc[0]
    assert row["source_file"].endswith("dt=2026-11-03/history.csv") and row["row_number"] == 6
    raw = json.loads(row["raw"])
    assert list(raw) == list(frame.columns)
    assert (raw[MODEL.request_id], raw["plan"], raw["tenure_months"]) == ("h-5", "gold", frame.iloc[5]["tenure_months"])


def test_a_row_with_several_problems_names_them_all(env):
    hist = simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 2)
    frame = outcome_csv_frame(hist, with_features=True).astype(str)
    frame.loc[0, ["tenure_months", "plan", MODEL.label.name]] = ["-3", "gold", "9"]
    env.land(DAY, "h.csv", frame)
    env.run()
    (row,) = env.quarantine().itertuples()
    assert row.reason_code == "invalid_label"  # the first problem in column order: ids, time, label, features
    for words in ("'9' is not one of the classes", "'-3' is below the minimum 0", "'gold' is not one of"):
        assert words in row.reason


def test_outcome_without_logged_prediction_is_unmatched_and_not_stored(env):
    d = logged_day(env, 10)
    frame = outcome_csv_frame(d)
    frame.loc[len(frame)] = ["never-logged", "2026-11-03T05:00:00Z", 1]
    env.land(DAY, "o.csv", frame)

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.unmatched) == (10, 1, 1)
    assert result.reasons == {"unmatched": 1}
    (row,) = env.quarantine().itertuples()
    assert row.reason_code == "unmatched" and "'never-logged'" in row.reason and row.row_number == 11
    assert "never-logged" not in set(env.store.read_outcomes(MODEL.name)["request_id"])


def test_duplicate_request_ids_first_occurrence_wins_by_file_name_then_row(env):
    d = logged_day(env, 6)
    frame = outcome_csv_frame(d)
    flipped = frame.copy()
    flipped[MODEL.label.name] = 1 - flipped[MODEL.label.name]
    env.land(DAY, "b.csv", flipped.iloc[:3])  # sorted after a.csv: its rows are the duplicates
    env.land(DAY, "a.csv", pd.concat([frame, frame.iloc[[4]]]))  # and one repeat inside a.csv itself

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.reasons) == (6, 4, {"duplicate_request_id": 4})
    q = env.quarantine()
    first_a = q[q["source_file"].str.endswith("a.csv")].iloc[0]
    assert first_a["row_number"] == 7 and f"'{frame.iloc[4][MODEL.request_id]}' already landed from a.csv row 5" \
        in first_a["reason"]
    assert q[q["source_file"].str.endswith("b.csv")]["reason"].str.contains("from a.csv row").all()
    stored = env.store.read_outcomes(MODEL.name).set_index("request_id")["label"].astype(int)
    assert stored.sort_index().tolist() == frame.set_index(MODEL.request_id)[MODEL.label.name].sort_index().tolist()


@pytest.mark.parametrize(
    "change, code, words",
    [
        (lambda f: f.drop(columns=[MODEL.label.name]), "missing_column",
         ["column 'churned' is missing", "expected columns: request_id, ts, churned (required)"]),
        (lambda f: f.drop(columns=["plan", "region"]), "partial_features",
         ["'plan', 'region' missing while", "all the features or none"]),
        (lambda f: f.assign(coupon="x"), "extra_column",
         ["column 'coupon' is not in the contract", "add it to the model's features in", "drop it upstream"]),
    ],
    ids=["missing", "partial-features", "extra"],
)
def test_column_problems_quarantine_the_whole_file_naming_file_and_column(env, change, code, words):
    hist = simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 5)
    env.land(DAY, "bad.csv", change(outcome_csv_frame(hist, with_features=True)))
    env.land(DAY, "good.csv", outcome_csv_frame(simulate.simulate_day(MODEL, dt.date(2026, 10, 2), 4), True))

    (result,) = env.run()

    assert (result.landed, result.quarantined, result.reasons) == (4, 5, {code: 5})
    q = env.quarantine()
    assert q["row_number"].tolist() == [1, 2, 3, 4, 5]
    for w in [*words, "dt=2026-11-03/bad.csv"]:
        assert q["reason"].str.contains(w, regex=False).all(), (w, q["reason"].iloc[0])
    assert json.loads(q["raw"].iloc[0])[MODEL.request_id] == hist.outcomes["request_id"].iloc[0]


def test_a_header_naming_a_column_twice_quarantines_the_file(env):
    text = "request_id,ts,churned,churned\nr1,2026-11-03T01:00:00Z,1,0\n"
    env.land(DAY, "twice.csv", raw=text.encode())
    (result,) = env.run()
    assert (result.landed, result.reasons) == (0, {"duplicate_column": 1})
    assert "column 'churned' appears more than once" in env.quarantine()["reason"].iloc[0]


def test_numeric_request_ids_in_parquet_are_read_as_text(env):
    d = logged_day(env, 3)
    frame = simulate.outcome_file_frame(MODEL, d, with_features=True)
    frame[MODEL.request_id] = [101, 102, 103]  # a source system with integer keys
    env.land(DAY, "ints.parquet", frame)
    (result,) = env.run()
    assert result.landed == 3
    assert sorted(env.store.read_outcomes(MODEL.name)["request_id"]) == ["101", "102", "103"]


def test_extra_columns_can_be_ignored_by_policy(env, caplog):
    model = dataclasses.replace(MODEL, ingestion=IngestionPolicy(extra_columns="ignore"))
    d = logged_day(env, 5)
    env.land(DAY, "o.csv", outcome_csv_frame(d).assign(coupon="x"))
    with caplog.at_level("WARNING", logger="evergreen.ingest"):
        (result,) = env.run(model=model)
    assert (result.landed, result.quarantined) == (5, 0)
    assert "coupon" not in env.labelled().columns
    assert any("ignoring column(s) 'coupon'" in r.getMessage() for r in caplog.records)


def test_malformed_csv_rows_are_quarantined_with_their_text(env):
    d = logged_day(env, 3)
    rows = outcome_csv_frame(d).to_csv(index=False).splitlines()
    text = "\n".join([rows[0], rows[1], "x,y,z,extra", rows[2], "only-one-field", rows[3]]) + "\n"
    env.land(DAY, "o.csv", raw=text.encode())

    (result,) = env.run()

    assert (result.rows_read, result.landed, result.reasons) == (5, 3, {"malformed_row": 2})
    q = env.quarantine()
    assert q["row_number"].tolist() == [2, 4]
    assert [json.loads(r) for r in q["raw"]] == ["x,y,z,extra", "only-one-field"]
    assert "4 field(s), the header has 3" in q["reason"].iloc[0]


def test_empty_files_are_recorded_not_errors(env):
    d = logged_day(env, 4)
    env.land(DAY, "a.csv", outcome_csv_frame(d))
    zero = env.land(DAY, "b.csv", raw=b"")
    header = env.land(DAY, "c.csv", raw=b"request_id,ts,churned\n")
    empty_pq = env.land(DAY, "d.parquet", outcome_csv_frame(d).iloc[:0])

    (result,) = env.run()

    assert (result.rows_read, result.landed, result.quarantined) == (4, 4, 0)
    assert result.empty_files == [zero, header, empty_pq]
    assert len(result.files) == 4


def test_a_day_with_no_files_writes_empty_partitions_with_the_fixed_schema(env):
    logged_day(env, 3)
    env.land(NEXT, "o.csv", outcome_csv_frame(simulate.simulate_day(MODEL, PRED_DAY, 3)))
    results = env.run(DAY, NEXT + dt.timedelta(days=1))
    assert [(r.day, r.landed, r.files) for r in results][0] == ("2026-11-03", 0, [])
    for dataset, path in (("labelled", lake.labelled_path), ("quarantine", lake.quarantine_path)):
        empty = pq.read_schema(path("churn", DAY, env.lake)).remove_metadata()
        full = pq.read_schema(path("churn", NEXT, env.lake)).remove_metadata()
        assert empty == full, dataset
    assert env.store.get_record("ingestion", "churn/2026-11-03").payload["landed"] == 0


def test_unreadable_file_fails_the_run_with_its_name_before_anything_is_written(env):
    d = logged_day(env, 5)
    env.land(DAY, "o.csv", outcome_csv_frame(d))  # a good first day ...
    broken = env.land(NEXT, "broken.parquet", raw=b"PAR1 this is not parquet")  # ... and a broken second day

    with pytest.raises(ingest.IngestionError) as err:
        env.run(DAY, NEXT + dt.timedelta(days=1))

    assert broken in str(err.value) and "cannot be read" in str(err.value)
    assert env.store.read_outcomes(MODEL.name).empty
    assert env.store.list_records("ingestion", MODEL.name) == []
    assert not Path(env.lake).exists()


def test_non_utf8_csv_is_unreadable(env):
    env.land(DAY, "latin1.csv", raw="request_id,ts,churned\ncafé,2026-11-03,1\n".encode("latin-1"))
    with pytest.raises(ingest.IngestionError, match="latin1.csv"):
        env.run()


def test_files_of_other_formats_are_ignored_with_a_warning(env, caplog):
    d = logged_day(env, 2)
    env.land(DAY, "o.csv", outcome_csv_frame(d))
    env.land(DAY, "notes.txt", raw=b"hello")
    with caplog.at_level("WARNING", logger="evergreen.ingest"):
        (result,) = env.run()
    assert result.landed == 2 and len(result.files) == 1
    assert any("notes.txt" in r.getMessage() for r in caplog.records)


def test_landing_zone_and_lake_can_be_any_fsspec_uri(tmp_path):
    import fsspec

    e = make_env(tmp_path / "mem")
    e_landing, e_lake = "memory://evergreen-test/landing", "memory://evergreen-test/lake"
    d = logged_day(e, 8)
    fs = fsspec.filesystem("memory")
    with fs.open(f"{lake.landing_dir('churn', DAY, e_landing)}/o.csv", "w") as fh:
        outcome_csv_frame(d).to_csv(fh, index=False)
    try:
        (result,) = ingest.ingest_interval(MODEL, DAY, NEXT, e.store, landing_root=e_landing, lake_root=e_lake)
        assert result.landed == 8 and result.files[0].startswith("memory://")
        assert len(lake.read_parquet(lake.labelled_path("churn", DAY, e_lake))) == 8
        assert result.labelled_uri.startswith("memory://")
    finally:
        fs.rm("/evergreen-test", recursive=True)


# --- idempotency -------------------------------------------------------------------------------------------------


def land_mixed_days(env: Env, n: int = 300) -> list[dt.date]:
    """Two landing days with everything at once: good rows, bad rows, duplicates, unmatched, a history file
    with features, a Parquet file and an empty file."""
    d = logged_day(env, n)
    out = outcome_csv_frame(d)
    half = n // 2
    bad = out.iloc[:5].copy().astype(object)
    bad.loc[bad.index[0], MODEL.label.name] = "7"
    bad.loc[bad.index[1], MODEL.timestamp] = "not-a-time"
    bad.loc[len(bad)] = ["nobody", "2026-11-03T01:00:00Z", 1]
    env.land(DAY, "a.csv", out.iloc[:half])
    env.land(DAY, "b.csv", bad)
    env.land(DAY, "c.csv", raw=b"")
    hist = simulate.outcome_file_frame(MODEL, simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 40), True)
    hist.loc[0, "plan"] = "gold"
    env.land(DAY, "history.parquet", hist)
    env.land(NEXT, "late.parquet", simulate.outcome_file_frame(MODEL, d).iloc[half:])
    return [DAY, NEXT]


def test_ten_reruns_leave_identical_store_and_lake(env):
    days = land_mixed_days(env)
    env.run(DAY, NEXT + dt.timedelta(days=1))
    first = env.digest(days)
    assert first["store/outcomes"]["rows"] > 0 and first["lake/quarantine/dt=2026-11-03/part-0.parquet"]["rows"] == 7
    for _ in range(9):
        # mix the interval's shapes: one two-day run, then day by day in either order
        env.run(DAY, NEXT + dt.timedelta(days=1))
        assert env.digest(days) == first
    env.run(NEXT)
    env.run(DAY)
    assert env.digest(days) == first


def test_a_later_correction_wins_whatever_order_days_are_run_in(env):
    d = logged_day(env, 4)
    original = outcome_csv_frame(d)
    correction = original.iloc[[0]].copy()
    correction[MODEL.label.name] = 1 - correction[MODEL.label.name]
    correction[MODEL.timestamp] = "2026-11-04T12:00:00Z"  # the correction is known later
    env.land(DAY, "o.csv", original)
    env.land(NEXT, "fix.csv", correction)
    rid = correction[MODEL.request_id].iloc[0]

    def stored_label() -> int:
        out = env.store.read_outcomes(MODEL.name)
        return int(out.set_index("request_id").loc[rid, "label"])

    env.run(DAY)
    env.run(NEXT)
    assert stored_label() == correction[MODEL.label.name].iloc[0]
    state = env.digest([DAY, NEXT])
    env.run(DAY)  # a backfill of the older day must not revert the correction
    assert stored_label() == correction[MODEL.label.name].iloc[0]
    assert env.digest([DAY, NEXT]) == state

    other = make_env(env.root.parent / "reversed")  # the same files ingested in the opposite order
    for day, name in ((DAY, "o.csv"), (NEXT, "fix.csv")):
        src = Path(lake.landing_dir("churn", day, env.landing)) / name
        other.land(day, name, raw=src.read_bytes())
    logged_day(other, 4)
    other.run(NEXT)
    other.run(DAY)
    reversed_state = other.digest([DAY, NEXT])
    for key in ("store/outcomes", "lake/labelled/dt=2026-11-03/part-0.parquet",
                "lake/labelled/dt=2026-11-04/part-0.parquet"):  # (records and quarantine name their own paths)
        assert reversed_state[key] == state[key], key


def test_newer_outcomes_keeps_the_latest_time_then_the_larger_label():
    t = pd.Timestamp("2026-11-03T10:00:00Z")
    incoming = pd.DataFrame({"request_id": ["a", "b", "c", "d", "e"],
                             "ts": [t, t, t, t, t], "label": [1, 0, 1, 0, 1]})
    existing = pd.DataFrame({"request_id": ["a", "b", "c", "d"],
                             "ts": [t - pd.Timedelta("1h"), t + pd.Timedelta("1h"), t, t], "label": [0, 1, 0, 0]})
    kept = ingest.newer_outcomes(incoming, existing)
    # a: newer -> write; b: older -> keep stored; c: same time, larger label -> write; d: identical -> skip; e: new
    assert kept["request_id"].tolist() == ["a", "c", "e"]


def _cli(env: Env, day: dt.date, pause: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", day.isoformat(),
           "--end", (day + dt.timedelta(days=2)).isoformat(), "--store-uri", env.store_uri,
           "--landing-root", env.landing, "--lake-root", env.lake]
    child_env = {k: v for k, v in os.environ.items() if k != ingest.PAUSE_ENV}
    if pause:
        child_env[ingest.PAUSE_ENV] = pause
    return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ingestion exited ({proc.returncode}) before pausing: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "ingestion never reached its pause point"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


CRASH_ROWS = 10_000


@pytest.fixture(scope="module")
def crash_inputs(tmp_path_factory):
    """Landed files and logged predictions for the crash tests, the state a clean run of the interval leaves, and
    a copy of the store as it was before ingestion (each test restarts from it, in the same folders so the paths
    in records and quarantine rows match)."""
    import shutil

    env = make_env(tmp_path_factory.mktemp("crash"))
    days = land_mixed_days(env, n=CRASH_ROWS)
    env.store.close()
    shutil.copy(env.root / "store.db", env.root / "pristine.db")  # closed: the WAL is checkpointed into the file
    env.store = SqlStore(env.store.uri)
    env.run(DAY, NEXT + dt.timedelta(days=1))
    clean = env.digest(days)
    env.store.close()
    return env, days, clean


@pytest.fixture
def crash_env(crash_inputs):
    import shutil

    env, days, clean = crash_inputs
    for leftover in env.root.glob("store.db*"):
        leftover.unlink()
    shutil.copy(env.root / "pristine.db", env.root / "store.db")
    lake.remove(env.lake)
    env.store = SqlStore(env.store.uri)
    assert env.digest(days)["store/outcomes"]["rows"] == 0
    yield env, days, clean
    env.store.close()


READY = "read and validated"  # the CLI's log line once every file is read, before the first write


@pytest.fixture(scope="module")
def cli_write_seconds(tmp_path_factory) -> float:
    """How long a clean ``python -m evergreen.ingest`` run of the crash tests' interval spends after reading
    its files (the stretch with the store and lake writes), measured from its log."""
    env = make_env(tmp_path_factory.mktemp("cli-duration"))
    land_mixed_days(env, n=CRASH_ROWS)
    proc = _cli(env, DAY)
    _wait_for_line(proc, READY)
    started = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert [r["day"] for r in json.loads(out)] == ["2026-11-03", "2026-11-04"]
    env.store.close()
    return time.monotonic() - started


def _wait_for_line(proc: subprocess.Popen, words: str) -> None:
    for line in iter(proc.stderr.readline, ""):
        if words in line:
            return
    raise AssertionError(f"ingestion exited ({proc.wait()}) without logging {words!r}")


def _retry(env: Env) -> None:
    proc = _cli(env, DAY)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("stage", ingest.STAGES)
def test_sigkill_at_each_write_stage_then_retry_matches_a_clean_run(crash_env, tmp_path, stage):
    env, days, clean = crash_env
    marker = tmp_path / "paused"
    proc = _cli(env, DAY, pause=f"{stage}:{marker}")
    _wait_for(marker, proc)
    _kill(proc)

    crashed = env.digest(days)
    assert crashed != clean
    if stage == "read":  # everything read and validated, nothing written
        assert crashed["store/outcomes"]["rows"] == 0 and not any(k.startswith("lake/") for k in crashed)
    if stage == "store":  # between the store write and the lake write: outcomes stored, no partition, no record
        assert crashed["store/outcomes"]["rows"] > 0
        assert not any(k.startswith("lake/") for k in crashed)
        assert crashed["store/records/ingestion"]["rows"] == 0

    _retry(env)
    assert env.digest(days) == clean


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_retry_matches_a_clean_run(crash_env, cli_write_seconds, seed):
    env, days, clean = crash_env
    delay = random.Random(seed).uniform(0, cli_write_seconds)
    proc = _cli(env, DAY)
    _wait_for_line(proc, READY)
    time.sleep(delay)
    _kill(proc)
    _retry(env)
    assert env.digest(days) == clean, f"seed {seed}: killed {delay:.2f}s into {cli_write_seconds:.2f}s of writes"


def test_cli_exits_2_naming_an_unreadable_file(env):
    env.land(DAY, "x.parquet", raw=b"garbage")
    proc = subprocess.run([sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", DAY.isoformat(),
                           "--store-uri", env.store_uri, "--landing-root", env.landing, "--lake-root", env.lake],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "x.parquet cannot be read" in proc.stderr


def test_state_digest_sees_a_changed_row():
    a = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert ingest.frame_digest(a) == ingest.frame_digest(a.iloc[::-1])  # order does not matter
    assert ingest.frame_digest(a) != ingest.frame_digest(a.assign(y=["a", "c"]))
    assert ingest.frame_digest(a) != ingest.frame_digest(a.astype({"x": "float64"}))
    assert ingest.frame_digest(a)["rows"] == 2 and np.isscalar(ingest.frame_digest(a)["sha256"])
