"""Ground-truth ingestion without Airflow, finding and reading landed files (evergreen.ingest.read): empty files and
empty days are facts, not errors; a file that cannot be read is quarantined whole while the day's other files land
(test_ingest_files.py has the details); files of other formats are listed and warned about; landing zone and lake
can be any fsspec URI.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
from ingest_env import DAY, MODEL, NEXT, PRED_DAY, logged_day, make_env, outcome_csv_frame

from evergreen import lake
from evergreen.ingest import tasks
from evergreen_demo import simulate


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


def test_unreadable_file_is_quarantined_with_its_name_and_the_other_day_lands(env):
    # Was: the run failed before anything was written. Issue 8 item 4: a bad file no longer blocks good ones.
    d = logged_day(env, 5)
    env.land(DAY, "o.csv", outcome_csv_frame(d))  # a good first day ...
    broken = env.land(NEXT, "broken.parquet", raw=b"PAR1 this is not parquet")  # ... and a broken second day

    first, second = env.run(DAY, NEXT + dt.timedelta(days=1))

    assert first.landed == 5 and len(env.store.read_outcomes(MODEL.name)) == 5
    (entry,) = second.files_unreadable
    assert entry["file"] == broken and "cannot be read" in entry["reason"]
    assert env.quarantine(NEXT)["source_file"].tolist() == [broken]
    assert len(env.store.list_records("ingestion", MODEL.name)) == 2


def test_non_utf8_csv_is_unreadable(env):
    bad = env.land(DAY, "latin1.csv", raw="request_id,ts,churned\ncafé,2026-11-03,1\n".encode("latin-1"))
    (result,) = env.run()
    assert [f["file"] for f in result.files_unreadable] == [bad] and result.reasons == {"unreadable_file": 1}


def test_files_of_other_formats_are_ignored_with_a_warning(env, caplog):
    d = logged_day(env, 2)
    env.land(DAY, "o.csv", outcome_csv_frame(d))
    notes = env.land(DAY, "notes.txt", raw=b"hello")
    with caplog.at_level("WARNING", logger="evergreen.ingest"):
        (result,) = env.run()
    assert result.landed == 2 and len(result.files) == 1
    assert any("notes.txt" in r.getMessage() for r in caplog.records)
    assert [f["file"] for f in result.files_ignored] == [notes]


def test_landing_zone_and_lake_can_be_any_fsspec_uri(tmp_path):
    import fsspec

    e = make_env(tmp_path / "mem")
    e_landing, e_lake = "memory://evergreen-test/landing", "memory://evergreen-test/lake"
    d = logged_day(e, 8)
    fs = fsspec.filesystem("memory")
    with fs.open(f"{lake.landing_dir('churn', DAY, e_landing)}/o.csv", "w") as fh:
        outcome_csv_frame(d).to_csv(fh, index=False)
    try:
        (result,) = tasks.ingest_interval(MODEL, DAY, NEXT, e.store, landing_root=e_landing, lake_root=e_lake)
        assert result.landed == 8 and result.files[0].startswith("memory://")
        assert len(lake.read_parquet(lake.labelled_path("churn", DAY, e_lake))) == 8
        assert result.labelled_uri.startswith("memory://")
    finally:
        fs.rm("/evergreen-test", recursive=True)
