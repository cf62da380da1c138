"""Ground-truth ingestion without Airflow, what a run makes of the rows it reads: valid outcomes reach the store, the
labelled partition (logged features joined, or the file's own) and the stats record; every kind of bad input is
quarantined with its reason (evergreen.ingest.contract, evergreen.ingest.join) while valid rows still land.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from ingest_env import DAY, MODEL, logged_day, outcome_csv_frame, reasons_by_id

from evergreen import lake
from evergreen.config import IngestionPolicy, LabelSpec
from evergreen_demo import simulate


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
                                            "arm", "source", "landing_key", *MODEL.feature_names]
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


def test_repeated_request_ids_keep_the_rules_winner_by_file_name_then_row(env):
    d = logged_day(env, 6)
    frame = outcome_csv_frame(d)
    flipped = frame.copy()
    flipped[MODEL.label.name] = 1 - flipped[MODEL.label.name]
    env.land(DAY, "b.csv", flipped.iloc[:3])  # sorted after a.csv, same outcome times: its rows are corrections
    env.land(DAY, "a.csv", pd.concat([frame, frame.iloc[[4]]]))  # and one identical repeat inside a.csv itself

    (result,) = env.run()

    assert (result.landed, result.quarantined) == (6, 4)
    assert result.reasons == {"duplicate_request_id": 1, "superseded": 3}
    q = env.quarantine()
    repeat = q[q["reason_code"] == "duplicate_request_id"].iloc[0]
    assert repeat["source_file"].endswith("a.csv") and repeat["row_number"] == 5  # the later copy (row 7) is kept
    assert f"'{frame.iloc[4][MODEL.request_id]}': the same outcome (identical in every field) landed again at a.csv " \
        "row 7" in repeat["reason"]
    replaced = q[q["reason_code"] == "superseded"]
    assert replaced["source_file"].str.endswith("a.csv").all() and replaced["row_number"].tolist() == [1, 2, 3]
    assert replaced["reason"].str.contains(r"replaced by the outcome at b\.csv row \d \(the same outcome time").all()
    stored = env.store.read_outcomes(MODEL.name).set_index("request_id")["label"].astype(int)
    expected = pd.concat([flipped.iloc[:3], frame.iloc[3:]]).set_index(MODEL.request_id)[MODEL.label.name]
    assert stored.sort_index().tolist() == expected.sort_index().tolist()
    assert env.labelled().set_index("request_id")["label"].sort_index().tolist() == expected.sort_index().tolist()


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
