"""Every file a producer lands is accounted for (evergreen.ingest.read, evergreen.ingest.tasks): compressed CSV and
Parquet are read; a file whose bytes cannot be parsed is kept whole in quarantine while the day's other files land;
other formats, folders and marker files are listed in the day's ingestion record; one alert names the files, and no
file name or parser message is ever rendered as a template.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from ingest_env import DAY, MODEL, NEXT, logged_day, outcome_csv_frame

from evergreen import lake
from evergreen.config import PlatformConfig
from evergreen.ingest import read, tasks
from evergreen.notifiers.alert import deliver

_spec = importlib.util.spec_from_file_location(
    "fake_smtp", Path(__file__).resolve().parents[1] / "notifiers" / "fake_smtp.py")
fake_smtp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_smtp)


def _csv_bytes(frame) -> bytes:
    return frame.to_csv(index=False).encode()


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def test_compressed_csv_lands_like_plain_csv(env):
    d = logged_day(env, 40)
    out = outcome_csv_frame(d)
    env.land(DAY, "a.csv.gz", raw=gzip.compress(_csv_bytes(out.iloc[:10])))
    # two gzip members, as `cat a.gz b.gz` or an appending exporter writes them
    env.land(DAY, "b.csv.gz", raw=gzip.compress(_csv_bytes(out.iloc[10:20])) +
             gzip.compress(out.iloc[20:25].to_csv(index=False, header=False).encode()))
    env.land(DAY, "c.CSV.BZ2", raw=bz2.compress(_csv_bytes(out.iloc[25:32])))
    env.land(DAY, "d.csv.zst", raw=_zstd(_csv_bytes(out.iloc[32:])))
    empty = env.land(DAY, "e.csv.gz", raw=gzip.compress(b""))

    (result,) = env.run()

    assert (result.rows_read, result.landed, result.quarantined) == (40, 40, 0)
    assert len(result.files) == 5 and result.empty_files == [empty]
    assert result.files_ignored == [] and result.files_unreadable == []
    assert sorted(env.labelled()["request_id"]) == sorted(d.predictions["request_id"])


def test_quarantined_rows_of_a_compressed_file_keep_their_row_numbers_and_text(env):
    d = logged_day(env, 3)
    text = _csv_bytes(outcome_csv_frame(d)) + b"oops,only-two\n"
    env.land(DAY, "o.csv.gz", raw=gzip.compress(text))
    (result,) = env.run()
    q = env.quarantine()
    assert result.landed == 3 and q["reason_code"].tolist() == ["malformed_row"] and q["row_number"].tolist() == [4]
    assert json.loads(q["raw"].iloc[0]) == "oops,only-two"


UNREADABLE = {
    "latin1.csv": "request_id,ts,churned\ncafé,2026-11-03,1\n".encode("latin-1"),
    "latin1-later.csv": "request_id,ts,churned\na,2026-11-03,1\ncafé,2026-11-03,1\n".encode("latin-1"),
    "garbage.csv": bytes(range(256)) * 4,
    "no-header.csv": b"\n\n,,\n1,2,3\n",
    "broken.parquet": b"PAR1 this is not parquet",
    "truncated.csv.gz": gzip.compress(b"request_id,ts,churned\n" + b"x,2026-11-03,1\n" * 50)[:-12],
    "not-gzip.csv.gz": b"request_id,ts,churned\nx,2026-11-03,1\n",
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_an_unreadable_file_is_kept_whole_in_quarantine_and_the_days_other_files_land(env, name):
    d = logged_day(env, 20)
    good = env.land(DAY, "good.csv", outcome_csv_frame(d))
    bad = env.land(DAY, name, raw=UNREADABLE[name])

    (result,) = env.run()

    assert (result.rows_read, result.landed, result.quarantined) == (20, 20, 1)
    assert result.reasons == {"unreadable_file": 1}
    assert result.files == sorted([good, bad]) and result.empty_files == []
    kept = tasks.kept_file_uri(MODEL.name, DAY, name, env.lake)
    assert Path(kept).read_bytes() == UNREADABLE[name]  # bytes preserved exactly (compressed ones too)
    (entry,) = result.files_unreadable
    assert entry["file"] == bad and entry["kept_at"] == kept and entry["bytes"] == len(UNREADABLE[name])
    assert entry["sha256"] == hashlib.sha256(UNREADABLE[name]).hexdigest() and "cannot be read as" in entry["reason"]
    if name.startswith("latin1"):
        assert "not UTF-8" in entry["reason"] and f"on line {name.count('later') + 2}" in entry["reason"]
    q = env.quarantine()
    assert q.to_dict("records")[0] | {"reason": None} == {
        "source_file": bad, "row_number": 0, "reason_code": "unreadable_file", "reason": None,
        "raw": json.dumps({"kept_at": kept, "bytes": entry["bytes"], "sha256": entry["sha256"]})}
    why = q["reason"].iloc[0]
    for words in (bad, entry["reason"], kept, "re-run the day"):
        assert words in why, (words, why)
    record = env.store.get_record("ingestion", f"churn/{DAY}").payload
    assert record["files_unreadable"] == [entry] and record["files_ignored"] == []
    assert len(env.store.read_outcomes(MODEL.name)) == 20


def test_a_broken_day_does_not_block_the_other_days_of_the_interval(env):
    d = logged_day(env, 5)
    env.land(DAY, "o.csv", outcome_csv_frame(d))
    env.land(NEXT, "broken.parquet", raw=b"PAR1 this is not parquet")
    first, second = env.run(DAY, NEXT + dt.timedelta(days=1))
    assert (first.landed, first.files_unreadable) == (5, [])
    assert (second.landed, second.reasons) == (0, {"unreadable_file": 1})
    assert len(env.store.list_records("ingestion", MODEL.name)) == 2


def test_a_file_that_cannot_be_fetched_fails_the_run_with_its_name_before_anything_is_written(env):
    d = logged_day(env, 5)
    env.land(DAY, "o.csv", outcome_csv_frame(d))
    folder = Path(lake.landing_dir(MODEL.name, NEXT, env.landing))
    folder.mkdir(parents=True)
    gone = folder / "gone.csv"
    os.symlink(env.root / "nowhere.csv", gone)  # listed, then cannot be opened: an I/O failure, not bad content

    with pytest.raises(read.IngestionError) as err:
        env.run(DAY, NEXT + dt.timedelta(days=1))

    assert str(gone) in str(err.value) and "cannot be fetched" in str(err.value) and "retry" in str(err.value)
    assert env.store.read_outcomes(MODEL.name).empty
    assert env.store.list_records("ingestion", MODEL.name) == []
    assert not Path(env.lake).exists()


def test_other_formats_folders_and_marker_files_are_listed_in_the_record(env, caplog):
    d = logged_day(env, 2)
    env.land(DAY, "o.csv", outcome_csv_frame(d))
    notes = env.land(DAY, "notes.txt", raw=b"hello")
    zipped = env.land(DAY, "o2.csv.zip", raw=b"PK\x03\x04")
    folder = Path(lake.landing_dir(MODEL.name, DAY, env.landing)) / "more.csv"
    folder.mkdir()
    (folder / "x.csv").write_bytes(b"request_id,ts,churned\n")
    success = env.land(DAY, "_SUCCESS", raw=b"")
    hidden = env.land(DAY, ".o3.csv.crc", raw=b"\x00")

    with caplog.at_level("WARNING", logger="evergreen.ingest"):
        (result,) = env.run()

    assert result.landed == 2 and len(result.files) == 1
    assert [f["file"] for f in result.files_ignored] == [str(folder), notes, zipped]
    reasons = {f["file"]: f["reason"] for f in result.files_ignored}
    assert "a folder" in reasons[str(folder)]
    assert ".csv / .csv.gz / .csv.bz2 / .csv.zst / .parquet" in reasons[notes]
    assert "ingestion.file_formats" in reasons[notes]
    assert [f["file"] for f in result.files_skipped] == [hidden, success]
    record = env.store.get_record("ingestion", f"churn/{DAY}").payload
    assert record["files_ignored"] == result.files_ignored and record["files_skipped"] == result.files_skipped
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "notes.txt" in text and "more.csv" in text and "o2.csv.zip" in text


def test_reruns_leave_the_same_lake_and_a_fixed_file_replaces_its_kept_copy(env):
    d = logged_day(env, 30)
    out = outcome_csv_frame(d)
    env.land(DAY, "a.csv", out.iloc[:20])
    env.land(DAY, "b.csv.gz", raw=gzip.compress(_csv_bytes(out.iloc[20:]))[:-12])  # truncated upload
    env.land(DAY, "notes.txt", raw=b"hello")
    env.run()
    first = env.digest()
    assert first[f"lake/quarantine-files/dt={DAY}/b.csv.gz"]["bytes"] > 0
    for _ in range(3):
        env.run()
        assert env.digest() == first

    env.land(DAY, "b.csv.gz", raw=gzip.compress(_csv_bytes(out.iloc[20:])))  # the producer lands it again, whole
    (result,) = env.run()
    assert (result.landed, result.quarantined, result.files_unreadable) == (30, 0, [])
    assert not lake.exists(tasks.kept_files_dir(MODEL.name, DAY, env.lake))
    assert not any(k.startswith("lake/quarantine-files/") for k in env.digest())


def test_the_cli_lands_a_day_with_an_unreadable_file_and_exits_2_only_when_a_file_cannot_be_fetched(env):
    env.land(DAY, "x.parquet", raw=b"garbage")
    cmd = [sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", DAY.isoformat(),
           "--store-uri", env.store_uri, "--landing-root", env.landing, "--lake-root", env.lake]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (day,) = json.loads(proc.stdout)
    assert day["files_unreadable"][0]["file"].endswith("/x.parquet") and day["reasons"] == {"unreadable_file": 1}

    os.symlink(env.root / "nowhere.csv", Path(lake.landing_dir(MODEL.name, DAY, env.landing)) / "gone.csv")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "gone.csv cannot be fetched" in proc.stderr


# --- the alert -----------------------------------------------------------------------------------------------


@pytest.fixture
def smtp(monkeypatch):
    with fake_smtp.FakeSmtpServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_FAKE_SMTP", server.connection_json())
        yield server


def _platform() -> PlatformConfig:
    return PlatformConfig(alert_destinations=("log", "email"), smtp_conn_id="fake_smtp",
                          alert_emails=("ops@example.com",), airflow_base_url="http://airflow.example:8080")


def test_a_clean_day_has_no_alert(env):
    env.land(DAY, "o.csv", outcome_csv_frame(logged_day(env, 3)))
    env.land(DAY, "_SUCCESS", raw=b"")  # a marker file is not news
    (result,) = env.run()
    assert tasks.landing_alert(result, None, _platform()) is None


def test_one_alert_names_the_unreadable_and_ignored_files_and_is_sent_once(env, smtp):
    env.land(DAY, "o.csv", outcome_csv_frame(logged_day(env, 3)))
    env.land(DAY, "broken.parquet", raw=b"PAR1 nope")
    env.land(DAY, "notes.txt", raw=b"hello")
    (result,) = env.run()

    alert = tasks.landing_alert(result, None, _platform())
    assert alert.key == f"churn/{DAY}/landing"
    assert alert.numbers["unreadable"] == ["broken.parquet"] and alert.numbers["ignored"] == ["notes.txt"]
    for words in ("broken.parquet", "Parquet magic bytes", "notes.txt", "1 unreadable, 1 ignored", "3 rows",
                  tasks.kept_file_uri(MODEL.name, DAY, "broken.parquet", env.lake)):
        assert words in alert.summary, words
    assert deliver(alert, None, platform=_platform(), store=env.store)["email"] == {"status": "sent"}
    (body,) = smtp.bodies()
    assert "broken.parquet" in body and "notes.txt" in body

    (again,) = env.run()  # a re-run (or a backfill) of the same day finds the same files: the same alert
    assert tasks.landing_alert(again, None, _platform()).fingerprint == alert.fingerprint
    assert deliver(tasks.landing_alert(again, None, _platform()), None, platform=_platform(),
                   store=env.store)["email"] == {"status": "already_sent"}
    assert len(smtp.messages) == 1


def test_file_names_are_data_in_the_alert_never_templates(env, smtp):
    payload = "{% endraw %}{{ 'ren' ~ 'dered' }}{# x #}{% raw %}"
    name = f"x{payload}.csv"
    env.land(DAY, name, raw=b"request_id,ts,churned\n\xff\n")
    env.land(DAY, f"n{payload}.txt", raw=b"hello")
    (result,) = env.run()
    assert result.files_unreadable[0]["file"].endswith(name)

    alert = tasks.landing_alert(result, None, _platform())
    assert deliver(alert, None, platform=_platform(), store=env.store)["email"] == {"status": "sent"}
    (body,) = smtp.bodies()
    body = body.replace("&#x27;", "'")
    assert "rendered" not in body  # nothing was evaluated ...
    assert f"unreadable {name}" in body and f"ignored n{payload}.txt" in body  # ... and the names arrive verbatim
