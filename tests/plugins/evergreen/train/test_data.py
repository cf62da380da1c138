"""evergreen.train.data: the training window, the train/holdout split, the fingerprint, and bad windows
that fail before any fitting.
"""

from __future__ import annotations

import dataclasses

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


def test_holdout_split_depends_only_on_the_request_id():
    ids = pd.Series([f"churn-20261101-{i:07d}" for i in range(20_000)])
    mask = data.holdout_mask(ids, 0.2)
    assert 0.18 < mask.mean() < 0.22
    shuffled = ids.sample(frac=1.0, random_state=1)
    again = pd.Series(data.holdout_mask(shuffled, 0.2), index=shuffled.index).sort_index().to_numpy()
    assert (again == mask).all()  # row order does not matter
    subset = ids.iloc[::7]
    assert (data.holdout_mask(subset, 0.2) == mask[::7]).all()  # nor do the other rows of the window
    assert (data.holdout_mask(ids, 0.3) >= mask).all()  # a larger holdout only adds rows


def test_fingerprint_changes_with_any_value():
    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1], "x": [1.0, None]})
    assert data.fingerprint(frame) == data.fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "x"] = 2.0
    assert data.fingerprint(changed) != data.fingerprint(frame)
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = 1
    assert data.fingerprint(relabelled) != data.fingerprint(frame)


def test_prepare_reads_exactly_the_window_and_splits_by_request_id(model, lake_root, window, prepared):
    assert len(prepared.partitions) == 4
    assert [p.rsplit("dt=", 1)[1][:10] for p in prepared.partitions] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert len(prepared.train) + len(prepared.holdout) == 4 * ROWS_PER_DAY
    assert list(prepared.train.columns) == [*model.feature_names, "label"]
    assert {"request_id", "entity_id", "ts", "label", *model.feature_names} <= set(prepared.holdout.columns)
    # A later, overlapping window puts the shared rows on the same side: champion and challenger holdouts agree.
    later = data.prepare(model, data.Window.parse("2026-11-04", "2026-11-08"), lake_root=lake_root)
    shared = set(prepared.holdout["request_id"]) & set(later.holdout["request_id"])
    assert len(shared) == len(later.holdout[later.holdout["ts"] < pd.Timestamp("2026-11-05", tz="UTC")])
    assert later.fingerprint != prepared.fingerprint
    assert data.prepare(model, window, lake_root=lake_root).fingerprint == prepared.fingerprint


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
