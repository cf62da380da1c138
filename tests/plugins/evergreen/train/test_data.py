"""evergreen.train.data: the training window, the out-of-time train/holdout split, the fingerprint, and bad
windows that fail before any fitting.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest
from train_helpers import FIRST, ROWS_PER_DAY, write_lake

from evergreen import lake
from evergreen_demo import simulate
from evergreen.train import data, spec


# --- windows, split, fingerprint --------------------------------------------------------------------------------


def test_window_parse_rejects_reversed_and_malformed_windows():
    assert data.Window.parse("2026-11-02", "2026-11-06").tag == "2026-11-02/2026-11-06"
    with pytest.raises(data.TrainingDataError, match=r"2026-11-06/2026-11-02.*end must be after start"):
        data.Window.parse("2026-11-06", "2026-11-02")
    with pytest.raises(data.TrainingDataError, match=r"'2026-13-01/2026-11-02'.*YYYY-MM-DD"):
        data.Window.parse("2026-13-01", "2026-11-02")


def test_window_split_holds_out_its_last_days_and_refuses_a_window_too_short():
    window = data.Window.parse("2026-11-02", "2026-11-06")
    train, holdout = window.split(1)
    assert (train.tag, holdout.tag) == ("2026-11-02/2026-11-05", "2026-11-05/2026-11-06")
    assert [w.tag for w in window.split(3)] == ["2026-11-02/2026-11-03", "2026-11-03/2026-11-06"]
    for days in (4, 5, 0):
        with pytest.raises(data.TrainingDataError, match=rf"training window 2026-11-02/2026-11-06 \(4 day\(s\)\) is "
                           rf"too short for training.holdout_days={days}.*widen the window or lower"):
            window.split(days)


def test_fingerprint_changes_with_any_value():
    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1], "x": [1.0, None]})
    assert data.fingerprint(frame) == data.fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "x"] = 2.0
    assert data.fingerprint(changed) != data.fingerprint(frame)
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = 1
    assert data.fingerprint(relabelled) != data.fingerprint(frame)


def _partition(model, root: str, day: str) -> pd.DataFrame:
    return lake.read_parquet(lake.labelled_path(model.name, day, root))


def test_prepare_reads_exactly_the_window_and_holds_out_its_last_days(model, lake_root, window, prepared):
    assert model.training.holdout_days == 1  # the shipped churn config
    assert len(prepared.partitions) == 4
    assert [p.rsplit("dt=", 1)[1][:10] for p in prepared.partitions] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert len(prepared.train) + len(prepared.holdout) == 4 * ROWS_PER_DAY
    assert (len(prepared.train), len(prepared.holdout)) == (3 * ROWS_PER_DAY, ROWS_PER_DAY)
    assert prepared.holdout_window == data.Window.parse("2026-11-05", "2026-11-06")
    assert list(prepared.train.columns) == [*model.feature_names, "label"]
    assert {"request_id", "entity_id", "ts", "label", *model.feature_names} <= set(prepared.holdout.columns)
    # the holdout is the last lake day, row for row
    last = _partition(model, lake_root, "2026-11-05")
    assert prepared.holdout["request_id"].tolist() == last["request_id"].tolist()
    assert data.prepare(model, window, lake_root=lake_root).fingerprint == prepared.fingerprint


def test_holdout_is_exactly_the_last_n_days_and_no_training_row_is_on_or_after_its_start(model, lake_root, window):
    two = dataclasses.replace(model, training=dataclasses.replace(model.training, holdout_days=2))
    prepared = data.prepare(two, window, lake_root=lake_root)
    assert prepared.holdout_window.tag == "2026-11-04/2026-11-06"
    days = {d: _partition(model, lake_root, d) for d in ("2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05")}
    held = pd.concat([days["2026-11-04"], days["2026-11-05"]], ignore_index=True)
    trained = pd.concat([days["2026-11-02"], days["2026-11-03"]], ignore_index=True)
    assert prepared.holdout["request_id"].tolist() == held["request_id"].tolist()
    # the training rows are exactly the rows of the days before the holdout start, in order
    pd.testing.assert_frame_equal(prepared.train, trained[[*model.feature_names, "label"]])
    # every training row landed before the holdout start; every holdout row on or after it
    frame, _ = data.load_window(two, window, lake_root)
    landed = data.landing_days(frame, window)
    start = pd.Timestamp(prepared.holdout_window.start)
    assert set(frame.loc[(landed >= start).to_numpy(), "request_id"]) == set(prepared.holdout["request_id"])
    assert int((landed < start).sum()) == len(prepared.train)
    # the fingerprint is the window's content: the same window gives the same one whatever the split
    assert prepared.fingerprint == data.prepare(model, window, lake_root=lake_root).fingerprint


def test_a_later_window_never_trained_the_earlier_model_on_its_holdout(model, lake_root, prepared):
    """The earlier model (window ending 2026-11-06) trained on days before 2026-11-05; a later window's holdout
    (2026-11-07) lies after all of them, so both can be scored on it side by side."""
    later = data.prepare(model, data.Window.parse("2026-11-04", "2026-11-08"), lake_root=lake_root)
    assert later.holdout_window.start >= prepared.window.end
    assert not set(later.holdout["request_id"]) & set(prepared.holdout["request_id"])
    assert later.fingerprint != prepared.fingerprint


def test_window_too_short_for_its_holdout_fails_naming_both(model, lake_root):
    with pytest.raises(data.TrainingDataError, match=r"training window 2026-11-02/2026-11-03 \(1 day\(s\)\) is too "
                       r"short for training.holdout_days=1: .*needs at least 2 days"):
        data.prepare(model, data.Window.parse("2026-11-02", "2026-11-03"), lake_root=lake_root)
    week = dataclasses.replace(model, training=dataclasses.replace(model.training, holdout_days=7))
    with pytest.raises(data.TrainingDataError, match=r"2026-11-02/2026-11-06 \(4 day\(s\)\) is too short for "
                       r"training.holdout_days=7"):
        data.prepare(week, data.Window.parse("2026-11-02", "2026-11-06"), lake_root=lake_root)


# --- bad training windows fail before any fitting ---------------------------------------------------------------


def test_empty_window_names_the_window(model, lake_root):
    with pytest.raises(data.TrainingDataError, match=r"training window 2027-01-01/2027-01-05 of model 'churn': no labelled partitions"):
        data.prepare(model, data.Window.parse("2027-01-01", "2027-01-05"), lake_root=lake_root)


def test_too_small_window_names_rows_and_minimum(model, lake_root):
    with pytest.raises(data.TrainingDataError, match=rf"training window 2026-11-02/2026-11-03 .*{ROWS_PER_DAY} labelled rows in 1 partition.*training.min_rows=600"):
        strict = dataclasses.replace(model, training=dataclasses.replace(model.training, min_rows=600))
        data.prepare(strict, data.Window.parse("2026-11-02", "2026-11-03"), lake_root=lake_root)


def test_single_class_window_is_refused(model, tmp_path):
    frame = simulate.labelled_frame(model, simulate.simulate_day(model, FIRST, 600))
    frame["label"] = 0
    lake.write_parquet_atomic(frame, lake.labelled_path(model.name, "2026-11-02", str(tmp_path)))
    with pytest.raises(data.TrainingDataError, match=r"training window 2026-11-02/2026-11-03 .*single class \(0\) in all 600 rows"):
        data.prepare(model, data.Window.parse("2026-11-02", "2026-11-03"), lake_root=str(tmp_path))


def test_partition_missing_a_feature_is_named(model, tmp_path):
    write_lake(model, str(tmp_path), FIRST, 2, 400)
    broken = lake.labelled_path(model.name, "2026-11-03", str(tmp_path))
    lake.write_parquet_atomic(lake.read_parquet(broken).drop(columns=["support_calls"]), broken)
    with pytest.raises(data.TrainingDataError, match=rf"partition {broken} \(training window 2026-11-02/2026-11-04\): column\(s\) support_calls missing"):
        data.prepare(model, data.Window.parse("2026-11-02", "2026-11-04"), lake_root=str(tmp_path))


def test_rejected_hyperparameter_fails_before_the_window_is_read(model, tmp_path):
    # The lake is empty: a hyper-parameter error must come first, so a bad retrain request fails in seconds.
    with pytest.raises(spec.HyperparameterError, match="'max_depth'"):
        data.prepare(model, data.Window.parse("2026-11-02", "2026-11-04"), lake_root=str(tmp_path),
                     hyperparameters={"max_depth": "deep"})


# --- corrections: the window applies the store's rule -----------------------------------------------------------


def test_a_corrected_request_trains_once_with_the_label_the_store_keeps(model, tmp_path):
    from evergreen.corrections import LANDING_KEY, landing_key

    root = str(tmp_path)
    first = simulate.labelled_frame(model, simulate.simulate_day(model, FIRST, 600))
    first[LANDING_KEY] = [landing_key("2026-11-03", "outcomes.csv", i + 1) for i in range(len(first))]
    lake.write_parquet_atomic(first, lake.labelled_path(model.name, "2026-11-03", root))
    # the next day lands a 1 <-> 0 fix of row 0 with the same outcome time (it wins: it landed later), and a
    # "correction" of row 1 with an earlier outcome time (it loses: the latest outcome time wins)
    fixes = first.iloc[[0, 1]].copy()
    fixes["label"] = 1 - fixes["label"]
    fixes.loc[fixes.index[1], "outcome_ts"] -= pd.Timedelta("1h")
    fixes[LANDING_KEY] = [landing_key("2026-11-04", "fix.csv", i + 1) for i in range(2)]
    lake.write_parquet_atomic(fixes, lake.labelled_path(model.name, "2026-11-04", root))

    frame, partitions = data.load_window(model, data.Window.parse("2026-11-03", "2026-11-05"), root)
    assert len(partitions) == 2
    assert frame["request_id"].is_unique and len(frame) == len(first)  # not twice with opposite labels
    labels = frame.set_index("request_id")["label"]
    assert labels[first["request_id"].iloc[0]] == fixes["label"].iloc[0]
    assert labels[first["request_id"].iloc[1]] == first["label"].iloc[1]


def test_a_request_corrected_on_a_holdout_day_is_held_out_only(model, tmp_path):
    """The rule runs over the whole window first: the correction that lands on the holdout day wins, so the request
    is in the holdout with its corrected label and not in training at all."""
    from evergreen.corrections import LANDING_KEY, landing_key

    root = str(tmp_path)
    first = simulate.labelled_frame(model, simulate.simulate_day(model, FIRST, 600))
    first[LANDING_KEY] = [landing_key("2026-11-03", "outcomes.csv", i + 1) for i in range(len(first))]
    lake.write_parquet_atomic(first, lake.labelled_path(model.name, "2026-11-03", root))
    second = simulate.labelled_frame(model, simulate.simulate_day(model, dt.date(2026, 11, 3), 600))
    fix = first.iloc[[0]].assign(label=1 - first["label"].iloc[0])
    landed = pd.concat([second, fix], ignore_index=True)
    landed[LANDING_KEY] = [landing_key("2026-11-04", "outcomes.csv", i + 1) for i in range(len(landed))]
    lake.write_parquet_atomic(landed, lake.labelled_path(model.name, "2026-11-04", root))

    prepared = data.prepare(model, data.Window.parse("2026-11-03", "2026-11-05"), lake_root=root)
    assert (len(prepared.train), len(prepared.holdout)) == (599, 601)
    held = prepared.holdout.set_index("request_id")["label"]
    assert held[first["request_id"].iloc[0]] == fix["label"].iloc[0]
    pd.testing.assert_frame_equal(prepared.train, first.iloc[1:][[*model.feature_names, "label"]].reset_index(drop=True))


def test_holdout_days_without_data_fail_naming_them(model, lake_root):
    # the lake ends with dt=2026-11-07: the window's last day (the holdout) has no partition
    with pytest.raises(data.TrainingDataError, match=r"training window 2026-11-05/2026-11-09 of model 'churn': the "
                       r"holdout days 2026-11-08/2026-11-09 \(training.holdout_days=1\) have no rows"):
        data.prepare(model, data.Window.parse("2026-11-05", "2026-11-09"), lake_root=lake_root)
