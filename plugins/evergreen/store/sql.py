"""SQL backend of the store contract, through SQLAlchemy Core (SQLite embedded; PostgreSQL by URI).

Timestamps are stored as integer microseconds since the epoch (UTC): exact, sortable and the same on every
dialect. Features are one JSON document per prediction, so adding a feature to a model needs no migration;
reads decode them in bulk with pyarrow's JSON reader.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from evergreen.store.base import (
    OUTCOME_COLUMNS,
    PREDICTION_COLUMNS,
    Record,
    RecordConflict,
    Store,
    StoreError,
    to_utc,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
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


def to_micros(value: Any) -> int:
    delta = to_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(value))


def series_to_micros(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_micros` for a column of timestamps (naive values are taken as UTC)."""
    import pandas as pd

    ts = pd.to_datetime(values, utc=True)
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64")


def _micros_to_series(values: Any) -> pd.Series:
    import pandas as pd

    return pd.to_datetime(pd.Series(values, dtype="int64"), unit="us", utc=True)


def _none_if_nan(value: Any) -> Any:
    return None if value is None or value != value else value


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

    # --- helpers -----------------------------------------------------------------------------------
    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise StoreError(f"{self.description}: upserts are implemented for SQLite and PostgreSQL only")
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        )
        with self.engine.begin() as conn:
            for i in range(0, len(rows), _CHUNK):
                conn.execute(stmt, rows[i : i + _CHUNK])

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
        order = [table.c.ts, table.c.request_id]
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
            for i in range(0, len(ids), _CHUNK):
                conn.execute(tmp.insert(), [{"request_id": r} for r in ids[i : i + _CHUNK]])
            stmt = sa.select(*cols).join(tmp, tmp.c.request_id == table.c.request_id).where(*where).order_by(*order)
            rows = conn.execute(stmt).all()
            tmp.drop(conn)
            return rows

    # --- predictions -------------------------------------------------------------------------------
    def upsert_predictions(self, model: str, df: pd.DataFrame, feature_names: Sequence[str]) -> int:
        missing = [c for c in (*PREDICTION_COLUMNS, *feature_names) if c not in df.columns]
        if missing:
            raise StoreError(f"{self.description}: predictions for model '{model}' lack columns {missing}")
        if df.empty:
            return 0
        feature_json = df[list(feature_names)].to_json(orient="records", lines=True, date_format="iso")
        ts = series_to_micros(df["ts"]).tolist()
        base = df[["request_id", "entity_id", "model_version", "arm", "prediction", "score"]].astype(object)
        base = base.where(base.notna(), None)
        rows = [
            {
                "model": model,
                "request_id": str(r[0]),
                "entity_id": None if r[1] is None else str(r[1]),
                "ts": t,
                "model_version": None if r[2] is None else str(r[2]),
                "arm": r[3],
                "prediction": _none_if_nan(r[4]),
                "score": _none_if_nan(r[5]),
                "features": f,
            }
            for r, t, f in zip(base.itertuples(index=False, name=None), ts, feature_json.splitlines())
        ]
        self._upsert(predictions, rows, ("model", "request_id"))
        return len(rows)

    def read_predictions(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        import pandas as pd
        import pyarrow.json as pj

        columns = ("request_id", "entity_id", "ts", "model_version", "arm", "prediction", "score", "features")
        rows = self._select(predictions, model, start, end, request_ids, columns)
        frame = pd.DataFrame.from_records(rows, columns=list(columns))
        frame["ts"] = _micros_to_series(frame["ts"])
        if frame.empty:
            return frame.drop(columns=["features"])
        blob = "\n".join(frame["features"]).encode()
        feats = pj.read_json(io.BytesIO(blob)).to_pandas()
        return pd.concat([frame.drop(columns=["features"]), feats], axis=1)

    # --- outcomes ----------------------------------------------------------------------------------
    def upsert_outcomes(self, model: str, df: pd.DataFrame) -> int:
        missing = [c for c in OUTCOME_COLUMNS if c not in df.columns]
        if missing:
            raise StoreError(f"{self.description}: outcomes for model '{model}' lack columns {missing}")
        if df.empty:
            return 0
        ts = series_to_micros(df["ts"]).tolist()
        rows = [
            {"model": model, "request_id": str(r), "ts": t, "label": _none_if_nan(float(lab))}
            for r, t, lab in zip(df["request_id"].tolist(), ts, df["label"].tolist())
        ]
        self._upsert(outcomes, rows, ("model", "request_id"))
        return len(rows)

    def read_outcomes(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        import pandas as pd

        rows = self._select(outcomes, model, start, end, request_ids, OUTCOME_COLUMNS)
        frame = pd.DataFrame.from_records(rows, columns=list(OUTCOME_COLUMNS))
        frame["ts"] = _micros_to_series(frame["ts"])
        return frame

    # --- records -----------------------------------------------------------------------------------
    def put_record(self, record: Record, *, append_only: bool = False) -> None:
        payload = json.dumps(record.payload, sort_keys=True, default=str)
        row = {"kind": record.kind, "key": record.key, "model": record.model, "ts": to_micros(record.ts),
               "payload": payload}
        if not append_only:
            self._upsert(records, [row], ("kind", "key"))
            return
        with self.engine.begin() as conn:
            existing = conn.execute(
                sa.select(records.c.payload).where(records.c.kind == record.kind, records.c.key == record.key)
            ).scalar_one_or_none()
            if existing is None:
                conn.execute(records.insert(), [row])
            elif existing != payload:
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
            rows = conn.execute(sa.select(records).where(*where).order_by(records.c.ts, records.c.key)).all()
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


def _record(row: Any) -> Record:
    return Record(kind=row.kind, key=row.key, model=row.model, ts=from_micros(row.ts), payload=json.loads(row.payload))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets Airflow's parallel tasks read while one writes; NORMAL sync is durable at each commit in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
