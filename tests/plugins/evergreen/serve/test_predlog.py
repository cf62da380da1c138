"""The prediction log loses nothing: a store outage, SIGTERM and SIGKILL under load (real child processes), the disk
bound, damaged spool lines and bad records, each against the embedded SQLite store.

The SIGKILL and SIGTERM tests and the append micro-benchmark print their figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from evergreen.serve.predlog import (
    REJECTED_DIR,
    KafkaSink,
    PredictionLog,
    PredictionLogError,
    decode_segment,
    encode_line,
)
from evergreen.store import open_store

MODEL = "churn"
FEATURES = {MODEL: ["tenure", "plan"]}
T0 = dt.datetime(2026, 11, 3, 12, tzinfo=dt.timezone.utc)


def record(i: int, prefix: str = "r", ts: dt.datetime | None = None) -> dict:
    return {
        "model": MODEL, "request_id": f"{prefix}{i:07d}", "entity_id": f"e{i % 97}",
        "ts": ts or T0 + dt.timedelta(milliseconds=i), "model_version": "3", "arm": "champion",
        "prediction": float(i % 2), "score": (i % 1000) / 1000, "features": {"tenure": i, "plan": "gold"},
    }


def stored(uri: str):
    store = open_store(uri)
    try:
        return store.read_predictions(MODEL)
    finally:
        store.close()


def segments(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.seg"))


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


class Outage:
    """A store factory whose stores fail every write until ``until`` (monotonic time), then write to the real store."""

    def __init__(self, uri: str, seconds: float) -> None:
        self.uri = uri
        self.until = time.monotonic() + seconds
        self.failures = 0

    def end(self) -> None:
        self.until = 0.0

    def __call__(self):
        store, outage = open_store(self.uri), self

        class FlakyStore:
            description = "flaky test store"

            def upsert_predictions(self, model, df, feature_names):
                if time.monotonic() < outage.until:
                    outage.failures += 1
                    raise ConnectionError("store unavailable (test outage)")
                return store.upsert_predictions(model, df, feature_names)

            def close(self):
                store.close()

        return FlakyStore()


FAST_RETRY = {"retry_initial_s": 0.02, "retry_max_s": 0.1}


# --- store unavailable -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["writes fail", "database cannot be opened"])
def test_store_unavailable_for_a_while_loses_nothing_and_everything_is_shipped_after(tmp_path, uri, kind):
    if kind == "writes fail":
        factory = outage = Outage(uri, seconds=1e9)
        end_outage = outage.end
    else:
        # a real SQLite failure: a folder where the database file should be makes every open fail
        (tmp_path / "store.db").mkdir()
        factory = lambda: open_store(uri)  # noqa: E731
        end_outage = (tmp_path / "store.db").rmdir
    plog = PredictionLog(tmp_path / "spool", factory, FEATURES, flush_interval_s=0.02, seal_interval_s=0.1,
                         **FAST_RETRY)
    plog.start()
    n, started = 0, time.monotonic()
    while time.monotonic() - started < 1.0:  # a second of traffic into the outage: every append is accepted
        assert plog.append([record(j) for j in range(n, n + 20)])
        n += 20
        time.sleep(0.01)
    wait_for(lambda: plog.stats()["ship_errors_total"] >= 3 and plog.stats()["queue_depth"] == 0,
             what="failed deliveries while the store is down")
    during = plog.stats()
    assert during["shipped_total"] == 0 and during["spooled_bytes"] > 0 and during["refused_total"] == 0
    end_outage()
    # shipped by the background shipper once the store is back, before any close()
    wait_for(lambda: plog.stats()["shipped_total"] == n, what="shipping after the outage")
    plog.close()
    got = stored(uri)
    assert got["request_id"].tolist() == [f"r{i:07d}" for i in range(n)]
    assert got.loc[got["request_id"] == "r0000007", ["tenure", "plan", "score"]].values.tolist() == [[7, "gold", 0.007]]
    assert plog.stats()["spooled_bytes"] == 0 and not segments(tmp_path / "spool")


def test_a_close_while_the_store_is_down_keeps_the_spool_and_the_next_start_ships_it(tmp_path, uri, caplog):
    spool = tmp_path / "spool"
    plog = PredictionLog(spool, Outage(uri, seconds=1e9), FEATURES, flush_interval_s=0.02, **FAST_RETRY)
    plog.start()
    assert plog.append([record(i) for i in range(500)])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="evergreen.serve.predlog"):
        plog.close(timeout_s=1.0)
    assert time.monotonic() - started < 8, "close() must return near its timeout when the store stays down"
    assert "stay in the spool" in caplog.text
    assert segments(spool) and plog.stats()["shipped_total"] == 0
    assert plog.append([record(999)]) is False  # closed: refused and counted
    assert plog.stats()["refused_total"] == 1

    again = PredictionLog(spool, lambda: open_store(uri), FEATURES)
    again.start()
    again.close()
    assert stored(uri)["request_id"].tolist() == [f"r{i:07d}" for i in range(500)]
    assert not segments(spool)


# --- SIGTERM and SIGKILL under load (real processes) ---------------------------------------------------------------

#: a serving process in miniature: a PredictionLog fed by a loop, shut down the way uvicorn does it (the SIGTERM
#: handler only asks; the main path calls close()). After each accepted append the running count goes to a shared
#: memory-mapped file, which outlives a SIGKILL, so the parent knows exactly what was accepted.
CHILD = r"""
import datetime as dt, json, mmap, os, signal, sys, time
from evergreen.serve.predlog import PredictionLog
from evergreen.store import open_store

spool, uri, progress, prefix, flush_s = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
fd = os.open(progress, os.O_RDWR | os.O_CREAT)
os.ftruncate(fd, 8)
counter = mmap.mmap(fd, 8)
plog = PredictionLog(spool, lambda: open_store(uri), {"churn": ["tenure", "plan"]}, flush_interval_s=flush_s,
                     seal_interval_s=0.2)
plog.start()
print("ready", flush=True)
accepted = 0
while not stop:
    ts = dt.datetime.now(dt.timezone.utc)
    batch = [{"model": "churn", "request_id": f"{prefix}{accepted + k:07d}", "entity_id": f"e{k}", "ts": ts,
              "model_version": "3", "arm": "champion", "prediction": 1.0, "score": 0.5,
              "features": {"tenure": accepted + k, "plan": "gold"}} for k in range(10)]
    if plog.append(batch):
        accepted += len(batch)
        counter[:8] = accepted.to_bytes(8, "little")
    time.sleep(0.0005)
started = time.monotonic()
plog.close(timeout_s=60)
print(json.dumps({"accepted": accepted, "close_s": time.monotonic() - started, **plog.stats()}), flush=True)
"""


def start_child(spool: Path, uri: str, progress: Path, prefix: str, flush_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(spool), uri, str(progress), prefix, str(flush_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"child did not start: {line!r} {proc.stderr.read()}")
    return proc


def test_sigterm_under_load_drains_everything(tmp_path, uri):
    spool, progress = tmp_path / "spool", tmp_path / "progress"
    proc = start_child(spool, uri, progress, "t", 0.05)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    accepted = summary["accepted"]
    assert accepted > 1000, summary  # it was under load
    ids = stored(uri)["request_id"]
    assert ids.is_unique and sorted(ids) == [f"t{i:07d}" for i in range(accepted)]
    assert summary["shipped_total"] == accepted and summary["refused_total"] == 0
    assert not segments(spool)
    print(f"\nSIGTERM under load: {accepted} records accepted in 1.5 s, all {accepted} in the store once; "
          f"close() drained in {summary['close_s']:.2f} s")


def test_sigkill_under_load_loses_at_most_the_last_flush_interval_and_replay_is_idempotent(tmp_path, uri):
    flush_s, spool = 0.05, tmp_path / "spool"
    figures = []
    for cycle in range(3):  # each new child first replays what the killed one left, while it takes new load
        prefix, progress = f"k{cycle}-", tmp_path / f"progress-{cycle}"
        proc = start_child(spool, uri, progress, prefix, flush_s)
        time.sleep(1.0 + 0.37 * cycle)  # kill at a different phase of the flush cycle each time
        killed_at = dt.datetime.now(dt.timezone.utc)
        proc.kill()
        proc.communicate(timeout=30)
        appended = int.from_bytes(progress.read_bytes()[:8], "little")
        figures.append((prefix, appended, killed_at))

    leftover = tmp_path / "spool-copy"
    shutil.copytree(spool, leftover, ignore=shutil.ignore_patterns(".lock"))
    plog = PredictionLog(spool, lambda: open_store(uri), FEATURES)
    plog.start()
    plog.close()
    got = stored(uri)
    assert got["request_id"].is_unique
    present = set(got["request_id"])
    for prefix, appended, killed_at in figures:
        expected = [f"{prefix}{i:07d}" for i in range(appended)]
        lost = [i for i, rid in enumerate(expected) if rid not in present]
        kept = [i for i, rid in enumerate(expected) if rid in present]
        # only a tail is lost: nothing older than the newest durable record
        assert not lost or min(lost) > max(kept), (prefix, lost[:5], max(kept))
        last_durable = got.loc[got["request_id"].str.startswith(prefix), "ts"].max().to_pydatetime()
        window_s = (killed_at - last_durable).total_seconds()
        print(f"\nSIGKILL under load ({prefix}): {appended} accepted, {len(lost)} lost "
              f"({100 * len(lost) / appended:.2f}%), all appended in the last {window_s * 1000:.0f} ms before the kill "
              f"(flush interval {flush_s * 1000:.0f} ms)")
        assert appended > 1000
        assert window_s <= flush_s + 0.25, "loss beyond the flush interval plus one group's write"

    # replaying the same segments again changes nothing: the upsert is keyed by (model, request id)
    again = PredictionLog(leftover, lambda: open_store(uri), FEATURES)
    again.start()
    again.close()
    replayed = stored(uri)
    assert replayed["request_id"].is_unique and replayed.equals(got)


# --- the disk bound --------------------------------------------------------------------------------------------

def test_the_disk_bound_refuses_explicitly_and_counts_and_every_accepted_record_lands(tmp_path, uri, caplog):
    spool, bound = tmp_path / "spool", 64_000
    outage = Outage(uri, seconds=1e9)  # nothing drains while the bound is reached
    plog = PredictionLog(spool, outage, FEATURES, max_spool_bytes=bound, flush_interval_s=0.01, **FAST_RETRY)
    plog.start()
    accepted, refused = [], []
    with caplog.at_level(logging.WARNING, logger="evergreen.serve.predlog"):
        for i in range(0, 2000, 5):
            batch = [record(j) for j in range(i, i + 5)]
            (accepted if plog.append(batch) else refused).extend(batch)
            time.sleep(0.001)
    assert accepted and refused
    assert "refused" in caplog.text and "spool is full" in caplog.text
    wait_for(lambda: plog.stats()["queue_depth"] == 0, what="the queue written")
    stats = plog.stats()
    assert stats["refused_total"] == len(refused)
    assert stats["spooled_bytes"] == sum(p.stat().st_size for p in segments(spool)) <= bound

    outage.end()
    wait_for(lambda: plog.stats()["spooled_bytes"] == 0, what="the spool drained")
    assert plog.append([record(5000)])  # room again: accepted
    plog.close()
    ids = set(stored(uri)["request_id"])
    assert ids == {r["request_id"] for r in accepted} | {"r0005000"}
    assert not ids & {r["request_id"] for r in refused}
    assert plog.stats()["refused_total"] == len(refused)


# --- damaged spool lines and bad records ---------------------------------------------------------------------------

def test_a_torn_or_damaged_line_is_skipped_and_counted_and_replay_ships_the_rest(tmp_path, uri, caplog):
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [encode_line(record(i)) for i in range(4)]
    damaged = good[1].replace(b'"gold"', b'"gilt"')  # the checksum no longer matches
    torn = good[3][: len(good[3]) // 2]  # a write cut short by SIGKILL
    (spool / "000000000007.seg").write_bytes(good[0] + damaged + good[2] + torn)
    assert decode_segment(good[0] + damaged + good[2] + torn)[1] == 2

    plog = PredictionLog(spool, lambda: open_store(uri), FEATURES)
    with caplog.at_level(logging.WARNING, logger="evergreen.serve.predlog"):
        plog.start()
        assert plog.append([record(10)])
        plog.close()
    assert stored(uri)["request_id"].tolist() == ["r0000000", "r0000002", "r0000010"]
    assert plog.stats()["torn_total"] == 2 and "000000000007.seg has 2 torn or damaged lines" in caplog.text
    assert not segments(spool)


def test_records_the_store_would_refuse_are_set_aside_counted_and_do_not_block_the_rest(tmp_path, uri, caplog):
    spool = tmp_path / "spool"
    no_id = record(900) | {"request_id": None}
    long_id = record(901) | {"request_id": "x" * 200}
    nested = record(902) | {"features": {"tenure": {"years": 2}, "plan": "gold"}}
    no_model = record(903) | {"model": None}
    unencodable = record(904) | {"features": {"tenure": object(), "plan": "gold"}}
    plog = PredictionLog(spool, lambda: open_store(uri), FEATURES, flush_interval_s=0.01)
    plog.start()
    with caplog.at_level(logging.ERROR, logger="evergreen.serve.predlog"):
        assert plog.append([record(i) for i in range(0, 50)] + [no_id, long_id, nested, no_model, unencodable]
                           + [record(i) for i in range(50, 100)])
        plog.close()
    assert stored(uri)["request_id"].tolist() == [f"r{i:07d}" for i in range(100)]
    assert plog.stats()["rejected_total"] == 5 and plog.stats()["shipped_total"] == 100
    aside = [json.loads(line) for p in (spool / REJECTED_DIR).glob("*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(str(a["record"]["entity_id"]) for a in aside) == sorted(f"e{i % 97}" for i in (900, 901, 902, 903))
    assert any("request_id" in a["reason"] for a in aside) and any("128 characters" in a["reason"] for a in aside)
    assert "cannot be encoded" in caplog.text and "set aside" in caplog.text


def test_a_failing_spool_write_is_retried_without_duplicating_the_group(tmp_path, uri, monkeypatch):
    from evergreen.serve import predlog

    real_sync, failures = predlog.os.fdatasync, []

    def flaky_sync(fd):
        if len(failures) < 3:  # the disk reports an error for the first three groups' syncs
            failures.append(fd)
            raise OSError(5, "Input/output error (test)")
        real_sync(fd)

    monkeypatch.setattr(predlog.os, "fdatasync", flaky_sync)
    spool, outage = tmp_path / "spool", Outage(uri, seconds=1e9)
    plog = PredictionLog(spool, outage, FEATURES, flush_interval_s=0.01, seal_interval_s=60, **FAST_RETRY)
    plog.start()
    assert plog.append([record(i) for i in range(100)])
    wait_for(lambda: plog.stats()["queue_depth"] == 0, what="the group written after the disk errors")
    assert plog.stats()["spool_errors_total"] == 3
    plog.close(timeout_s=0.5)  # the store is down: the segment stays
    [segment] = segments(spool)
    assert [r["request_id"] for r in decode_segment(segment.read_bytes())[0]] == [f"r{i:07d}" for i in range(100)]
    again = PredictionLog(spool, lambda: open_store(uri), FEATURES)
    again.start()
    again.close()
    assert stored(uri)["request_id"].tolist() == [f"r{i:07d}" for i in range(100)]


def test_a_model_without_configured_features_stores_the_features_it_carries(tmp_path, uri, caplog):
    other = record(1) | {"model": "upsell", "features": {"visits": 4, "channel": "web"}}
    with caplog.at_level(logging.WARNING, logger="evergreen.serve.predlog"):
        with PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES) as plog:
            assert plog.append([other])
    store = open_store(uri)
    got = store.read_predictions("upsell")
    store.close()
    assert got[["request_id", "visits", "channel"]].values.tolist() == [["r0000001", 4, "web"]]
    assert "model 'upsell' has no configured feature names" in caplog.text


# --- one log per spool, lifecycle --------------------------------------------------------------------------------

def test_one_log_per_spool_directory(tmp_path, uri):
    first = PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES)
    first.start()
    second = PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES)
    with pytest.raises(PredictionLogError, match=r"spool.*in use by another prediction log \(process \d+\)"):
        second.start()
    first.close()
    second.start()  # free again once the first closed
    second.close()


def test_lifecycle_errors_are_explicit(tmp_path, uri):
    plog = PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES)
    with pytest.raises(PredictionLogError, match="before start"):
        plog.append([record(0)])
    with pytest.raises(ValueError, match="flush_interval_s"):
        PredictionLog(tmp_path / "x", lambda: open_store(uri), FEATURES, flush_interval_s=0)
    with PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES) as running:
        assert running.append([]) is True
        assert set(running.stats()) >= {"queue_depth", "spooled_bytes", "shipped_total", "refused_total",
                                        "ship_errors_total"}


# --- optional sinks ---------------------------------------------------------------------------------------------

def test_an_optional_sink_gets_every_record_and_holds_the_spool_while_it_fails(tmp_path, uri):
    class ListSink:
        description = "list sink"

        def __init__(self):
            self.records, self.failures_left, self.closed = [], 3, False

        def write(self, model, records):
            if self.failures_left:
                self.failures_left -= 1
                raise ConnectionError("sink down")
            self.records.extend((model, r["request_id"]) for r in records)

        def close(self):
            self.closed = True

    sink = ListSink()
    plog = PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES, sinks=[sink], **FAST_RETRY)
    plog.start()
    assert plog.append([record(i) for i in range(300)])
    plog.close()
    expected = [f"r{i:07d}" for i in range(300)]
    assert stored(uri)["request_id"].tolist() == expected
    assert sorted({rid for _, rid in sink.records}) == expected and sink.closed
    assert plog.stats()["ship_errors_total"] == 3


def test_kafka_sink_with_a_stand_in_producer(monkeypatch):
    """The Kafka sink's own logic only: it has never run against a broker here."""
    sent, fail = [], []

    class Producer:
        def __init__(self, config):
            self.config, self.callbacks = config, []

        def produce(self, topic, value, key, on_delivery):
            sent.append((topic, key, json.loads(value)))
            self.callbacks.append(on_delivery)

        def poll(self, timeout):
            return 0

        def flush(self, timeout):
            for callback in self.callbacks:
                callback("broker said no" if fail else None, None)
            self.callbacks = []
            return 0

    monkeypatch.setitem(sys.modules, "confluent_kafka", types.SimpleNamespace(Producer=Producer))
    sink = KafkaSink("predictions", {"bootstrap.servers": "localhost:9092"})
    sink.write(MODEL, [json.loads(encode_line(record(1))[9:])])
    assert sent == [("predictions", b"churn/r0000001", json.loads(encode_line(record(1))[9:]))]
    fail.append(True)
    with pytest.raises(RuntimeError, match=r"kafka topic 'predictions': 1 of 1 messages failed \(first: broker"):
        sink.write(MODEL, [record(2)])
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(PredictionLogError, match="pip install confluent-kafka"):
        KafkaSink("predictions", {})


# --- the request path cost --------------------------------------------------------------------------------------

def test_append_cost_on_the_request_path(tmp_path, uri):
    """One thread appending single records while the writer and shipper run; prints appends/s."""
    plog = PredictionLog(tmp_path / "spool", lambda: open_store(uri), FEATURES)
    plog.start()
    n = 50_000
    records = [[record(i)] for i in range(n)]
    started = time.perf_counter()
    for batch in records:
        plog.append(batch)
    elapsed = time.perf_counter() - started
    plog.close()
    assert plog.stats()["shipped_total"] == n
    print(f"\nappend(): {n / elapsed:,.0f} single-record appends/s from one thread "
          f"({elapsed / n * 1e6:.2f} us each, the writer and shipper running beside it)")
    assert n / elapsed > 20_000  # loose: a shared 2-core machine; the figure above is the measurement
