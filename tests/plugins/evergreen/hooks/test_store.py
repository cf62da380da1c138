"""StoreHook: the store backend comes from the ``evergreen_store`` Connection (AIRFLOW_CONN_EVERGREEN_STORE); without
it, the embedded SQLite file in embedded mode only, else a config error naming the Connection."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowConfigException
from mongomock_store import mongomock_store

from evergreen.hooks.store import StoreHook
from evergreen.store.base import Record
from evergreen.store.mongo import MongoStore
from evergreen.store.sql import SqlStore

DAY = pd.Timestamp("2026-11-02", tz="UTC")


def set_conn(monkeypatch, conn: dict, name: str = "EVERGREEN_STORE") -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))


def write_one(store) -> None:
    store.upsert_outcomes("churn", pd.DataFrame({"request_id": ["r1"], "ts": [DAY], "label": [1]}))


def test_sqlite_connection(monkeypatch, tmp_path):
    path = tmp_path / "stores" / "evergreen.db"
    set_conn(monkeypatch, {"conn_type": "sqlite", "host": str(path)})
    hook = StoreHook()
    assert hook.uri == f"sqlite:///{path}"
    store = hook.get_conn()
    assert isinstance(store, SqlStore)
    assert hook.get_conn() is store  # built once per hook
    write_one(store)
    store.close()
    assert path.exists()
    with SqlStore(f"sqlite:///{path}") as again:
        assert again.read_outcomes("churn")["request_id"].tolist() == ["r1"]


def test_mongo_connection_with_a_uri_extra(monkeypatch):
    db = f"hooks_{uuid.uuid4().hex[:8]}"
    set_conn(monkeypatch, {"conn_type": "mongo", "extra": {"uri": f"mongomock://hooks/{db}"}})
    store = StoreHook().get_conn()
    assert isinstance(store, MongoStore)
    assert store.database_name == db
    write_one(store)
    # another client of the same (mock) server sees the row: the hook talks to the configured database
    assert mongomock_store(f"mongomock://hooks/{db}").read_outcomes("churn")["request_id"].tolist() == ["r1"]


@pytest.mark.parametrize(
    "conn, uri",
    [
        ({"conn_type": "mongo", "host": "mongo.internal", "port": 27017, "login": "ev", "password": "p@ss/word",
          "schema": "evergreen"}, "mongodb://ev:p%40ss%2Fword@mongo.internal:27017/evergreen"),
        ({"conn_type": "postgres", "host": "pg.internal", "port": 5432, "login": "ev", "password": "pw",
          "schema": "evergreen"}, "postgresql://ev:pw@pg.internal:5432/evergreen"),
    ],
    ids=["mongo", "postgres"],
)
def test_uri_built_from_connection_fields(monkeypatch, conn, uri):
    set_conn(monkeypatch, conn)
    assert StoreHook().uri == uri


def test_default_is_the_embedded_sqlite_file_under_evergreen_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_EVERGREEN_STORE", raising=False)
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path))
    hook = StoreHook()
    assert hook.uri == f"sqlite:///{tmp_path / 'store.db'}"
    with hook.get_conn() as store:
        assert isinstance(store, SqlStore)
        store.put_record(Record("ingestion", "churn/2026-11-02", "churn", DAY.to_pydatetime(), {"rows": 3}))
    assert (tmp_path / "store.db").exists()


def test_a_named_connection(monkeypatch):
    db = f"hooks_{uuid.uuid4().hex[:8]}"
    set_conn(monkeypatch, {"conn_type": "mongo", "extra": {"uri": f"mongomock://hooks/{db}"}}, name="STORE_EU")
    assert StoreHook(store_conn_id="store_eu").uri == f"mongomock://hooks/{db}"


def test_a_connection_of_another_type_is_a_clear_config_error(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "http", "host": "example.org"})
    with pytest.raises(AirflowConfigException) as err:
        StoreHook().get_conn()
    message = str(err.value)
    assert "evergreen_store" in message and "'http'" in message
    assert "mongo" in message and "sqlite" in message and "'uri' extra" in message


def test_a_sqlite_connection_without_a_path_is_a_clear_config_error(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "sqlite"})
    with pytest.raises(AirflowConfigException, match="without a host; set the host to the database file's path"):
        StoreHook().get_conn()


def test_an_unsupported_uri_is_a_clear_config_error(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "mongo", "extra": {"uri": "redis://cache/0"}})
    with pytest.raises(AirflowConfigException, match="Connection 'evergreen_store'.*'redis' is not supported"):
        StoreHook().get_conn()


def test_a_mistyped_uri_scheme_is_a_config_error_that_keeps_the_password_out(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "mongo", "extra": {"uri": "mongdb://ev:s3cret-pw@mongo:27017/evergreen"}})
    with pytest.raises(AirflowConfigException) as err:
        StoreHook().get_conn()
    assert "'evergreen_store'" in str(err.value) and "'mongdb'" in str(err.value)
    assert "s3cret-pw" not in str(err.value)


# --- production refuses to guess ----------------------------------------------------------------------------------


@pytest.fixture
def production(monkeypatch, tmp_path):
    """Outside embedded mode (no EVERGREEN_EMBEDDED), with an empty home that must stay empty."""
    monkeypatch.delenv("EVERGREEN_EMBEDDED", raising=False)
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_without_the_connection_outside_embedded_mode_the_hook_names_it(production, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EVERGREEN_STORE", raising=False)
    hook = StoreHook()
    with pytest.raises(AirflowConfigException) as err:
        hook.get_conn()
    message = str(err.value)
    assert "Connection 'evergreen_store'" in message and "AIRFLOW_CONN_EVERGREEN_STORE=" in message
    assert "EVERGREEN_EMBEDDED=1" in message
    assert not production.exists()  # no SQLite file was made on the side


def test_a_mistyped_connection_id_is_a_missing_connection(production, monkeypatch):
    set_conn(monkeypatch, {"conn_type": "sqlite", "host": str(production / "s.db")}, name="EVERGREEN_STOR")
    monkeypatch.delenv("AIRFLOW_CONN_EVERGREEN_STORE", raising=False)
    with pytest.raises(AirflowConfigException, match="'evergreen_store' for the Evergreen store is not defined"):
        StoreHook().get_conn()
    with pytest.raises(AirflowConfigException, match="AIRFLOW_CONN_STORE_EU="):
        StoreHook(store_conn_id="store_eu").get_conn()


@pytest.mark.parametrize("value", ["0", "", "false", "no", "yes please"])
def test_only_1_or_true_is_embedded_mode(production, monkeypatch, value):
    from evergreen.paths import embedded_mode

    monkeypatch.setenv("EVERGREEN_EMBEDDED", value)
    monkeypatch.delenv("AIRFLOW_CONN_EVERGREEN_STORE", raising=False)
    assert not embedded_mode()
    with pytest.raises(AirflowConfigException, match="is not defined"):
        StoreHook().get_conn()
    for on in ("1", "true", "TRUE", " 1 "):
        monkeypatch.setenv("EVERGREEN_EMBEDDED", on)
        assert embedded_mode(), on


def test_a_defined_connection_works_outside_embedded_mode(production, monkeypatch, tmp_path):
    set_conn(monkeypatch, {"conn_type": "sqlite", "host": str(tmp_path / "prod.db")})
    with StoreHook().get_conn() as store:
        write_one(store)
    assert (tmp_path / "prod.db").exists() and not production.exists()
