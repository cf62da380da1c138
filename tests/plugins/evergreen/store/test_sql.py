"""What the SQL backend adds to the contract: a database created by an older version gets the outcomes' landing key
when a store opens it (SQLite here; PostgreSQL too when ``EVERGREEN_TEST_POSTGRES_URI`` is set)."""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from evergreen.store.sql import SqlStore

POSTGRES_URI = os.environ.get("EVERGREEN_TEST_POSTGRES_URI")
DAY = pd.Timestamp("2026-11-03", tz="UTC")

#: the outcomes table as versions before landing keys created it
OLD_OUTCOMES = """CREATE TABLE evergreen_outcomes (
    model VARCHAR(64) NOT NULL, request_id VARCHAR(128) NOT NULL, ts BIGINT NOT NULL, label FLOAT,
    PRIMARY KEY (model, request_id))"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.skipif(
    not POSTGRES_URI, reason="set EVERGREEN_TEST_POSTGRES_URI=postgresql://user:pw@host/db to run against it"))])
def old_database(request, tmp_path):
    """``(open a store, engine)`` on a database holding one outcome in the old table layout."""
    if request.param == "sqlite":
        uri, kwargs = f"sqlite:///{tmp_path / 'old.db'}", {}
        engine = sa.create_engine(uri)
    else:
        schema = f"evergreen_old_{uuid.uuid4().hex[:10]}"
        uri, kwargs = POSTGRES_URI, {"connect_args": {"options": f"-csearch_path={schema}"}}
        admin = sa.create_engine(POSTGRES_URI)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine = sa.create_engine(uri, **kwargs)
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_OUTCOMES))
        conn.execute(sa.text("INSERT INTO evergreen_outcomes VALUES ('churn', 'old', :ts, 1.0)"),
                     {"ts": DAY.value // 1000})
    yield (lambda: SqlStore(uri, **kwargs)), engine
    engine.dispose()
    if request.param == "postgresql":
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_an_old_database_gets_the_landing_key_on_open_and_keeps_its_rows(old_database):
    open_store, engine = old_database
    store = open_store()
    assert "landing_key" in {c["name"] for c in sa.inspect(engine).get_columns("evergreen_outcomes")}
    got = store.read_outcomes("churn")
    assert (got["request_id"].tolist(), got["label"].tolist(), got["landing_key"].tolist()) == (["old"], [1.0], [""])
    # the old row sorts before every landing: a landed correction at the same time replaces it
    fix = pd.DataFrame({"request_id": ["old"], "ts": [DAY], "label": [0], "landing_key": ["2026-11-04/61/000000000001"]})
    assert store.upsert_outcomes("churn", fix) == 1
    assert store.read_outcomes("churn")["label"].tolist() == [0.0]
    store.close()
    open_store().close()  # opening again changes nothing
