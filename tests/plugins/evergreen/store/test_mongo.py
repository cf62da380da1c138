"""What the MongoDB backend adds to the contract: URI handling, document layout and indexes (on mongomock,
through the test suite's ``mongomock://`` scheme or a mongomock client injected into a ``mongodb://`` store)."""

from __future__ import annotations

import datetime as dt
import inspect
import uuid

import pandas as pd
import pytest
from mongomock_store import mongomock_client, mongomock_store

import evergreen.store
import evergreen.store.mongo
from evergreen.store import open_store
from evergreen.store.base import Record, StoreError
from evergreen.store.mongo import MongoStore


def fresh_uri(host: str = "layout") -> str:
    return f"mongomock://{host}/t_{uuid.uuid4().hex[:10]}"


def test_database_from_the_uri_path_with_a_default():
    assert mongomock_store(fresh_uri()).database_name.startswith("t_")
    assert mongomock_store("mongomock://layout").database_name == "evergreen"
    assert mongomock_store("mongomock://layout/").database_name == "evergreen"
    assert MongoStore("mongodb://db.internal", client=mongomock_client("layout")).database_name == "evergreen"


def test_open_store_routes_mongo_uris(monkeypatch):
    assert isinstance(open_store(fresh_uri()), MongoStore)
    with pytest.raises(StoreError, match="not a MongoDB URI"):
        MongoStore("redis://cache/0")
    # a mongodb:// URI reaches pymongo.MongoClient with the URI itself and a timezone-aware client
    built = []

    def client(uri, **kwargs):
        built.append((uri, kwargs))
        return mongomock_client("routes")

    monkeypatch.setattr("pymongo.MongoClient", client)
    for uri in ("mongodb://db.internal/evergreen", "mongodb+srv://cluster.example.org/evergreen"):
        assert isinstance(open_store(uri), MongoStore)
    assert built == [("mongodb://db.internal/evergreen", {"tz_aware": True}),
                     ("mongodb+srv://cluster.example.org/evergreen", {"tz_aware": True})]


def test_client_options_with_an_injected_client_are_refused():
    with pytest.raises(StoreError, match=r"client options \['tz_aware'\] given with a client"):
        MongoStore("mongodb://db.internal/evergreen", client=mongomock_client("layout"), tz_aware=False)


def test_the_runtime_has_no_test_double():
    # mongomock is the test suite's stand-in for a server: the runtime neither imports nor names it
    assert "mongomock" not in inspect.getsource(evergreen.store.mongo)
    assert "mongomock" not in inspect.getsource(evergreen.store)


def test_the_description_hides_the_password():
    store = MongoStore("mongodb://ev:s3cret@db.internal:27017/evergreen", client=mongomock_client("layout"))
    assert "s3cret" not in store.description
    assert store.description == "mongodb://ev:***@db.internal:27017/evergreen"
    store = mongomock_store("mongomock://ev:s3cret@layout/evergreen")
    assert "s3cret" not in store.description
    assert store.description == "mongomock://ev:***@layout/evergreen"
    with pytest.raises(StoreError) as err:
        MongoStore("redis://ev:s3cret@cache/0")
    assert "s3cret" not in str(err.value) and "redis://ev:***@cache/0" in str(err.value)


def test_stores_on_one_mock_host_share_data_and_other_hosts_do_not():
    uri = fresh_uri("shared")
    mongomock_store(uri).put_record(Record("drift", "k", "churn", dt.datetime(2026, 11, 2), {}))
    assert mongomock_store(uri).get_record("drift", "k") is not None
    assert open_store(uri).get_record("drift", "k") is not None
    assert mongomock_store(uri.replace("shared", "elsewhere")).get_record("drift", "k") is None


def test_documents_keep_a_millisecond_date_and_exact_microseconds():
    store = mongomock_store(fresh_uri())
    ts = pd.Timestamp("2026-11-02 10:00:00.123456", tz="UTC")
    store.upsert_outcomes("churn", pd.DataFrame({"request_id": ["r1"], "ts": [ts], "label": [1]}))
    doc = store.outcomes.find_one({"model": "churn", "request_id": "r1"})
    assert doc["ts"] == dt.datetime(2026, 11, 2, 10, 0, 0, 123000, tzinfo=dt.timezone.utc)
    assert doc["ts_us"] == ts.value // 1000
    assert doc["label"] == 1.0

    store.upsert_predictions("churn", pd.DataFrame({
        "request_id": ["r1"], "entity_id": ["e1"], "ts": [ts], "model_version": ["3"], "arm": ["champion"],
        "prediction": [1.0], "score": [0.8], "plan": ["basic"], "tenure": [12],
    }), ["plan", "tenure"])
    doc = store.predictions.find_one({"model": "churn", "request_id": "r1"})
    assert doc["features"] == {"plan": "basic", "tenure": 12}  # a subdocument, queryable as features.plan


def test_indexes_serve_the_contract_queries():
    store = mongomock_store(fresh_uri())
    for coll in (store.predictions, store.outcomes):
        info = coll.index_information()
        assert info["model_request_id"]["key"] == [("model", 1), ("request_id", 1)]
        assert info["model_request_id"]["unique"] is True
        assert info["model_ts"]["key"] == [("model", 1), ("ts", 1)]
    info = store.records.index_information()
    assert info["kind_key"]["key"] == [("kind", 1), ("key", 1)] and info["kind_key"]["unique"] is True
    assert info["kind_model_ts"]["key"] == [("kind", 1), ("model", 1), ("ts", 1)]


def test_upserts_never_duplicate_documents():
    store = mongomock_store(fresh_uri(), batch_size=2)
    df = pd.DataFrame({"request_id": ["a", "b", "c"], "ts": [pd.Timestamp("2026-11-02")] * 3, "label": [0, 1, 0]})
    store.upsert_outcomes("churn", df)
    store.upsert_outcomes("churn", df.assign(label=[1, 1, 1]))
    assert store.outcomes.count_documents({"model": "churn"}) == 3
    assert sorted(d["label"] for d in store.outcomes.find({})) == [1.0, 1.0, 1.0]


def test_an_outcome_document_from_before_landing_keys_reads_as_unkeyed_and_can_be_corrected():
    store = mongomock_store(fresh_uri())
    day = pd.Timestamp("2026-11-03", tz="UTC")
    store.outcomes.insert_one({"model": "churn", "request_id": "old", "ts": day.to_pydatetime(),
                               "ts_us": day.value // 1000, "label": 1.0})  # no landing_key field
    assert store.read_outcomes("churn")["landing_key"].tolist() == [""]
    # an earlier outcome loses; a landed correction at the same time wins (a missing key sorts first)
    assert store.upsert_outcomes("churn", pd.DataFrame({"request_id": ["old"], "ts": [day - pd.Timedelta("1s")],
                                                        "label": [0], "landing_key": ["2026-11-04/61/000000000001"]})) == 0
    assert store.upsert_outcomes("churn", pd.DataFrame({"request_id": ["old"], "ts": [day], "label": [0],
                                                        "landing_key": ["2026-11-04/61/000000000001"]})) == 1
    got = store.read_outcomes("churn")
    assert (got["label"].tolist(), got["landing_key"].tolist()) == ([0.0], ["2026-11-04/61/000000000001"])
    assert store.outcomes.count_documents({"model": "churn"}) == 1


def test_a_losing_outcome_is_retried_without_an_upsert_and_other_errors_still_fail(monkeypatch):
    """The stored outcome wins: the filtered upsert collides with the unique index (E11000) and is retried as a
    plain filtered update; a write error of another kind is reported, naming the model."""
    from pymongo.errors import BulkWriteError

    store = mongomock_store(fresh_uri(), batch_size=2)
    day = pd.Timestamp("2026-11-03", tz="UTC")
    frame = pd.DataFrame({"request_id": ["a", "b", "c"], "ts": [day] * 3, "label": [1, 1, 1],
                          "landing_key": ["k5"] * 3})
    assert store.upsert_outcomes("churn", frame) == 3
    # a and c lose (older key), b wins: collided rows are retried, only b is written
    later = frame.assign(label=0, landing_key=["k1", "k9", "k1"])
    assert store.upsert_outcomes("churn", later) == 1
    assert store.read_outcomes("churn")["label"].tolist() == [1.0, 0.0, 1.0]

    def broken(ops, ordered):
        raise BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "bad value"}], "nUpserted": 0,
                              "nMatched": 0})

    monkeypatch.setattr(store.outcomes, "bulk_write", broken)
    with pytest.raises(StoreError, match=r"1 outcomes rows for model 'churn' were not written.*bad value"):
        store.upsert_outcomes("churn", frame)
