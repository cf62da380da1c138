"""The lake's atomic writes, listings and partition reads: on local disk, and on an S3 API (moto's server mode on
localhost, reached through s3fs with the endpoint from ``AWS_ENDPOINT_URL`` the way an operator configures it)."""

from __future__ import annotations

import datetime as dt
import os
import time

import pandas as pd
import pytest
from s3_server import moto_s3, s3  # noqa: F401  (pytest fixtures)

from evergreen import lake


def test_write_is_atomic_and_sweeps_temp_files_left_by_a_killed_writer(tmp_path):
    target = tmp_path / "m" / "labelled" / "dt=2026-11-02" / "part-0.parquet"
    target.parent.mkdir(parents=True)
    stale = target.parent / ".tmp-part-0.parquet-deadbeef"
    live = target.parent / ".tmp-part-0.parquet-cafe"  # a concurrent writer's file: recent, must stay
    other = target.parent / ".tmp-other.parquet-dead"  # another target's temp file: not ours to remove
    for f in (stale, live, other):
        f.write_bytes(b"half a parquet file")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))

    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1]})
    lake.write_parquet_atomic(frame, str(target))

    pd.testing.assert_frame_equal(lake.read_parquet(str(target)), frame)
    assert not stale.exists()
    assert live.exists() and other.exists()


def test_listing_a_local_folder_gives_plain_paths_sorted_and_skips_hidden_files(tmp_path):
    folder = tmp_path / "landing" / "churn" / "dt=2026-11-03"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.CSV", "a.parquet", "_SUCCESS", ".partial.csv", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert lake.list_files(str(folder), ["csv", "parquet"]) == [str(folder / "a.parquet"), str(folder / "b.CSV")]
    assert [(e["uri"], e["type"]) for e in lake.list_dir(str(folder))] == [
        (str(folder / n), "directory" if n == "sub" else "file")
        for n in (".partial.csv", "_SUCCESS", "a.parquet", "b.CSV", "notes.txt", "sub")]
    assert lake.list_dir(str(tmp_path / "nothing")) == [] and lake.list_files(str(tmp_path / "nothing"), ["csv"]) == []


# --- the same operations on an S3 API (moto's server on localhost, through s3fs) -----------------------------------


def test_atomic_write_on_s3_leaves_only_the_final_object_and_sweeps_stale_temps(s3):
    prefix = "lake/m/labelled/dt=2026-11-02"
    s3.put(f"{prefix}/.tmp-part-0.parquet-deadbeef", b"half a parquet file")  # a killed writer's, two hours ago
    s3.age(f"{prefix}/.tmp-part-0.parquet-deadbeef", 7200)
    s3.put(f"{prefix}/.tmp-part-0.parquet-cafe", b"half a parquet file")  # a concurrent writer's: recent, must stay
    s3.put(f"{prefix}/.tmp-other.parquet-dead", b"half a parquet file")  # another target's: not ours to remove
    s3.age(f"{prefix}/.tmp-other.parquet-dead", 7200)

    uri = f"{s3.uri}/{prefix}/part-0.parquet"
    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1]})
    assert lake.write_parquet_atomic(frame, uri) == uri

    pd.testing.assert_frame_equal(lake.read_parquet(uri), frame)
    assert s3.keys(prefix) == [f"{prefix}/.tmp-other.parquet-dead", f"{prefix}/.tmp-part-0.parquet-cafe",
                               f"{prefix}/part-0.parquet"]
    replaced = pd.DataFrame({"request_id": ["c"], "label": [1]})
    lake.write_parquet_atomic(replaced, uri)  # a re-run replaces the object in place
    pd.testing.assert_frame_equal(lake.read_parquet(uri), replaced)
    assert lake.exists(uri) and lake.write_text_atomic("{}", f"{s3.uri}/lake/m/reference/version=1/stats.json")
    lake.remove(f"{s3.uri}/{prefix}")
    assert s3.keys(prefix) == [] and not lake.exists(uri)


def test_listing_on_s3_sees_what_other_writers_land_after_an_earlier_listing(s3):
    day = f"{s3.uri}/landing/churn/dt=2026-11-03"
    s3.put("landing/churn/dt=2026-11-03/", b"")  # the "folder" marker the S3 console and some tools create
    s3.put("landing/churn/dt=2026-11-03/b.CSV", b"request_id\nx\n")
    s3.put("landing/churn/dt=2026-11-03/_SUCCESS", b"")
    s3.put("landing/churn/dt=2026-11-03/.partial.csv", b"")
    s3.put("landing/churn/dt=2026-11-03/sub/x.csv", b"")
    assert lake.list_files(day, ["csv", "parquet"]) == [f"{day}/b.CSV"]
    assert [(e["uri"], e["type"]) for e in lake.list_dir(day)] == [  # the folder's own marker is not an entry
        (f"{day}/.partial.csv", "file"), (f"{day}/_SUCCESS", "file"), (f"{day}/b.CSV", "file"),
        (f"{day}/sub", "directory")]
    assert not lake.exists(f"{day}/a.parquet")

    # A source system lands and replaces files after that listing, from another process: the lake must not answer
    # from what it saw before (s3fs caches listings per instance unless told not to).
    s3.put("landing/churn/dt=2026-11-03/a.parquet", b"PAR1")
    s3.put("landing/churn/dt=2026-11-03/b.CSV", b"request_id\nx\ny\nz\n")
    assert lake.list_files(day, ["csv", "parquet"]) == [f"{day}/a.parquet", f"{day}/b.CSV"]
    assert lake.exists(f"{day}/a.parquet")
    fs, path = lake.filesystem(f"{day}/b.CSV")
    with fs.open(path, "rb") as fh:
        assert fh.read() == b"request_id\nx\ny\nz\n"  # the new object whole, not the old one's length of it
    assert lake.list_files(f"{s3.uri}/landing/churn/dt=2026-11-04", ["csv"]) == []
    assert lake.list_dir(f"{s3.uri}/landing/churn/dt=2026-11-04") == []


def test_a_write_to_a_missing_bucket_fails_naming_the_uri_and_creates_no_bucket(s3):
    uri = "s3://evergreen-no-such-bucket/lake/m/labelled/dt=2026-11-02/part-0.parquet"
    with pytest.raises(FileNotFoundError, match=r"cannot write s3://evergreen-no-such-bucket/lake/.*create the bucket"):
        lake.write_parquet_atomic(pd.DataFrame({"a": [1]}), uri)
    assert "evergreen-no-such-bucket" not in [b["Name"] for b in s3.client.list_buckets()["Buckets"]]


def test_partitions_of_a_window_on_s3_are_read_and_counted_from_their_footers(s3):
    root = f"{s3.uri}/lake"
    days = [dt.date(2026, 11, 2) + dt.timedelta(days=i) for i in range(3)]
    for i, day in enumerate(days):
        if i != 1:  # a missing day is skipped, not an error here
            lake.write_parquet_atomic(pd.DataFrame({"request_id": [f"{day}-{j}" for j in range(i + 1)]}),
                                      lake.labelled_path("m", day, root))
    frame, read = lake.read_partitions("m", "labelled", days[0], days[-1] + dt.timedelta(days=1), root)
    assert read == [lake.labelled_path("m", days[0], root), lake.labelled_path("m", days[2], root)]
    assert read[0].startswith("s3://") and len(frame) == 4
    assert lake.partition_rows("m", "labelled", days[0], days[-1] + dt.timedelta(days=1), root) == {
        days[0]: 1, days[2]: 3}
