"""SQL backend of the store contract, through SQLAlchemy Core (SQLite embedded; PostgreSQL by URI).

Timestamps are stored as integer microseconds since the epoch (UTC): exact, sortable and the same on every
dialect. Features are one JSON document per prediction, so adding a feature to a model needs no migration;
they are encoded column-wise with Arrow (floats exactly, as their shortest round-trip text) and reads decode them
in bulk with pyarrow's JSON reader (:func:`evergreen.store.base.decode_feature_json`).

Rows are ordered by ``(ts, request_id)`` with request ids compared as bytes (PostgreSQL is told ``COLLATE "C"``),
the order every backend returns.

Outcomes are written with ``INSERT ... ON CONFLICT (model, request_id) DO UPDATE ... WHERE <the correction rule>``
(:func:`evergreen.corrections.wins` on ``excluded`` against the stored row), so "the latest outcome wins" is one
atomic statement per row, not a read, a compare and a write: SQLite serialises writers on its database lock, and
PostgreSQL locks the conflicting row and evaluates the predicate on its latest version. Batches are written in
request-id order, so two PostgreSQL writers lock shared rows in the same order and cannot deadlock.

A database created before outcomes carried a landing key gets the ``landing_key`` column (``''`` for the rows it
holds: they sort before every landing) when a store opens it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from evergreen.corrections import LANDING_KEY, wins
from evergreen.store.base import (
    OUTCOME_COLUMNS,
    OUTCOME_DTYPES,
    PREDICTION_COLUMNS,
    PREDICTION_DTYPES,
    Record,
    RecordConflict,
    Store,
    StoreError,
    decode_feature_json,
    encode_feature_json,
    feature_arrays,
    float_column,
    from_micros,
    last_per_request,
    micros_column,
    micros_to_series,
    outcome_rows,
    series_to_micros,  # noqa: F401 - re-exported: these helpers lived here before moving to base.py
    str_column,
    to_micros,
    to_utc,  # noqa: F401
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_CHUNK = 50_000

metadata = sa.MetaData()
predictions = sa.Table(
    "evergreen_predictions",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("entity_id", sa.String(128)),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("model_version", sa.String(64)),
    sa.Column("arm", sa.String(32)),
    sa.Column("prediction", sa.Float),
    sa.Column("score", sa.Float),
    sa.Column("features", sa.Text, nullable=False),
    sa.Index("ix_evergreen_predictions_model_ts", "model", "ts"),
)
outcomes = sa.Table(
    "evergreen_outcomes",
    metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("label", sa.Float),
    sa.Column(LANDING_KEY, sa.Text, nullable=False, server_default=""),
    sa.Index("ix_evergreen_outcomes_model_ts", "model", "ts"),
)
records = sa.Table(
    "evergreen_records",
    metadata,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(256), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Index("ix_evergreen_records_kind_model_ts", "kind", "model", "ts"),
)


class SqlStore(Store):
    def __init__(self, uri: str, **engine_kwargs: Any) -> None:
        self.uri = uri
        url = sa.engine.make_url(uri)
        self.description = url.render_as_string(hide_password=True)
        self.dialect = url.get_backend_name()
        if self.dialect == "sqlite" and url.database:
            from pathlib import Path

            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs.setdefault("connect_args", {"timeout": 60})
        self.engine = sa.create_engine(uri, **engine_kwargs)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self._add_landing_key()

    def _add_landing_key(self) -> None:
        """Add the outcomes' landing key to a database created before it existed (``''`` for the rows there)."""
        def present() -> bool:
            return LANDING_KEY in {c["name"] for c in sa.inspect(self.engine).get_columns(outcomes.name)}

        if present():
            return
        kind = outcomes.c[LANDING_KEY].type.compile(self.engine.dialect)
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {outcomes.name} ADD COLUMN {LANDING_KEY} {kind} NOT NULL DEFAULT ''"))
        except sa.exc.DBAPIError:
            if not present():  # another process opening the same database may have added it first
                raise
            return
        log.info("%s: added column %s.%s to a database created by an older version", self.description,
                 outcomes.name, LANDING_KEY)

    # --- helpers -----------------------------------------------------------------------------------
    def _bytewise(self, column: sa.ColumnElement) -> sa.ColumnElement:
        # PostgreSQL sorts text by the database's locale ("a" < "B"); the contract orders ids as bytes, like
        # SQLite and MongoDB do.
        return column.collate("C") if self.dialect == "postgresql" else column

    def _insert_statement(self) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise StoreError(f"{self.description}: upserts are implemented for SQLite and PostgreSQL only")
        return insert

    def _upsert(
        self,
        table: sa.Table,
        columns: Mapping[str, Sequence[Any]],
        keys: Sequence[str],
        where: Callable[[Any], sa.ColumnElement] | None = None,
    ) -> int:
        """Insert or replace rows given as equally long columns, in one transaction; returns the rows written.

        ``where(excluded)`` makes the replacement conditional: a stored row is replaced only where it holds (the
        others count as not written).
        """
        n = len(next(iter(columns.values())))
        if not n:
            return 0
        stmt = self._insert_statement()(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
            where=None if where is None else where(stmt.excluded),
        )
        written = 0
        with self.engine.begin() as conn:
            if self.dialect == "sqlite":
                # The compiled statement straight through the driver's executemany: SQLAlchemy's per-row parameter
                # processing costs three times SQLite's own work at a million rows (values here are plain Python
                # ints, floats, strings and None, which need no processing).
                compiled = stmt.compile(dialect=self.engine.dialect)
                rows = list(zip(*(columns[name] for name in compiled.positiontup)))
                for i in range(0, n, _CHUNK):
                    written += conn.exec_driver_sql(compiled.string, rows[i : i + _CHUNK]).rowcount
                return written
            # RETURNING gives one row per row inserted or replaced (a driver's executemany has no reliable
            # rowcount), and lets SQLAlchemy send each chunk as multi-row INSERTs.
            stmt = stmt.returning(table.c[keys[-1]])
            names = list(columns)
            rows = [dict(zip(names, values)) for values in zip(*columns.values())]
            for i in range(0, n, _CHUNK):
                written += len(conn.execute(stmt, rows[i : i + _CHUNK]).all())
        return written

    def _select(
        self,
        table: sa.Table,
        model: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        request_ids: Iterable[str] | None,
        columns: Sequence[str],
    ) -> list[tuple]:
        cols = [table.c[c] for c in columns]
        where = [table.c.model == model]
        if start is not None:
            where.append(table.c.ts >= to_micros(start))
        if end is not None:
            where.append(table.c.ts < to_micros(end))
        order = [table.c.ts, self._bytewise(table.c.request_id)]
        with self.engine.begin() as conn:
            if request_ids is None:
                return conn.execute(sa.select(*cols).where(*where).order_by(*order)).all()
            ids = sorted({str(r) for r in request_ids})
            if not ids:
                return []
            # A temporary table keeps a lookup of a million ids one join instead of a thousand IN (...) queries.
            tmp = sa.Table("_evergreen_ids", sa.MetaData(), sa.Column("request_id", sa.String(128), primary_key=True),
                           prefixes=["TEMPORARY"])
            tmp.create(conn, checkfirst=True)
            conn.execute(tmp.delete())
            if self.dialect == "sqlite":  # the driver's executemany, as in _upsert: no per-row parameter processing
                insert = tmp.insert().compile(dialect=self.engine.dialect).string
                for i in range(0, len(ids), _CHUNK):
                    conn.exec_driver_sql(insert, [(r,) for r in ids[i : i + _CHUNK]])
            else:
                for i in range(0, len(ids), _CHUNK):
                    conn.execute(tmp.insert(), [{"request_id": r} for r in ids[i : i + _CHUNK]])
            stmt = sa.select(*cols).join(tmp, tmp.c.request_id == table.c.request_id).where(*where).order_by(*order)
            rows = conn.execute(stmt).all()
            tmp.drop(conn)
            return rows

    # --- predictions -------------------------------------------------------------------------------
    def upsert_predictions(self, model: str, df: pd.DataFrame, feature_names: Sequence[str]) -> int:
        df = last_per_request(self.description, "predictions", model, df, (*PREDICTION_COLUMNS, *feature_names))
        if df.empty:
            return 0
        ctx = (self.description, "predictions", model)
        features = encode_feature_json(feature_arrays(self.description, model, df, feature_names), len(df))
        columns = {
            "model": [model] * len(df),
            "request_id": str_column(df, "request_id"),
            "entity_id": str_column(df, "entity_id"),
            "ts": micros_column(*ctx, df["ts"]).tolist(),
            "model_version": str_column(df, "model_version"),
            "arm": str_column(df, "arm"),
            "prediction": float_column(*ctx, df, "prediction"),
            "score": float_column(*ctx, df, "score"),
            "features": features,
        }
        self._upsert(predictions, columns, ("model", "request_id"))
        return len(df)

    def read_predictions(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        import pandas as pd

        columns = (*PREDICTION_COLUMNS, "features")
        rows = self._select(predictions, model, start, end, request_ids, columns)
        frame = _typed(pd.DataFrame.from_records(rows, columns=list(columns)), PREDICTION_DTYPES)
        features = decode_feature_json(frame.pop("features").tolist())
        return pd.concat([frame, features], axis=1) if features.shape[1] else frame

    # --- outcomes ----------------------------------------------------------------------------------
    def upsert_outcomes(self, model: str, df: pd.DataFrame) -> int:
        rows = outcome_rows(self.description, model, df)
        if not len(rows):
            return 0
        columns = {
            "model": [model] * len(rows),
            "request_id": rows.request_id,
            "ts": rows.ts_us,
            "label": rows.label,
            LANDING_KEY: rows.landing_key,
        }
        return self._upsert(outcomes, columns, ("model", "request_id"), where=self._correction_wins)

    def _correction_wins(self, excluded: Any) -> sa.ColumnElement:
        """The correction rule as the upsert's predicate: the incoming row (``excluded``) against the stored one,
        landing keys compared as bytes (as Python and MongoDB compare them)."""
        return wins(excluded.ts, self._bytewise(excluded[LANDING_KEY]), outcomes.c.ts,
                    self._bytewise(outcomes.c[LANDING_KEY]), or_=sa.or_, and_=sa.and_)

    def read_outcomes(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        import pandas as pd

        rows = self._select(outcomes, model, start, end, request_ids, OUTCOME_COLUMNS)
        return _typed(pd.DataFrame.from_records(rows, columns=list(OUTCOME_COLUMNS)), OUTCOME_DTYPES)

    # --- records -----------------------------------------------------------------------------------
    def put_record(self, record: Record, *, append_only: bool = False) -> None:
        payload = json.dumps(record.payload, sort_keys=True, default=str)
        row = {"kind": record.kind, "key": record.key, "model": record.model, "ts": to_micros(record.ts),
               "payload": payload}
        if not append_only:
            self._upsert(records, {name: [value] for name, value in row.items()}, ("kind", "key"))
            return
        insert = self._insert_statement()(records).on_conflict_do_nothing(index_elements=["kind", "key"])
        with self.engine.begin() as conn:
            # Insert-if-absent, then compare: two writers racing on one key cannot both "win".
            conn.execute(insert, [row])
            existing = conn.execute(
                sa.select(records.c.payload).where(records.c.kind == record.kind, records.c.key == record.key)
            ).scalar_one()
            if existing != payload:
                raise RecordConflict(
                    f"{self.description}: append-only record {record.kind}/{record.key} already exists with a "
                    "different payload; append a new record instead of rewriting history"
                )

    def get_record(self, kind: str, key: str) -> Record | None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(records).where(records.c.kind == kind, records.c.key == key)).first()
        return None if row is None else _record(row)

    def list_records(self, kind, model=None, start=None, end=None) -> list[Record]:
        where = [records.c.kind == kind]
        if model is not None:
            where.append(records.c.model == model)
        if start is not None:
            where.append(records.c.ts >= to_micros(start))
        if end is not None:
            where.append(records.c.ts < to_micros(end))
        with self.engine.begin() as conn:
            order = (records.c.ts, self._bytewise(records.c.key))
            rows = conn.execute(sa.select(records).where(*where).order_by(*order)).all()
        return [_record(r) for r in rows]

    def delete_records(self, kind, model, start, end) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                records.delete().where(
                    records.c.kind == kind,
                    records.c.model == model,
                    records.c.ts >= to_micros(start),
                    records.c.ts < to_micros(end),
                )
            )
        return result.rowcount

    def close(self) -> None:
        self.engine.dispose()


def _typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Base columns with the contract's dtypes, also for empty reads."""
    frame["ts"] = micros_to_series(frame["ts"])
    return frame.astype({c: t for c, t in dtypes.items() if c != "ts"})


def _record(row: Any) -> Record:
    return Record(kind=row.kind, key=row.key, model=row.model, ts=from_micros(row.ts), payload=json.loads(row.payload))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets Airflow's parallel tasks read while one writes; NORMAL sync is durable at each commit in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
