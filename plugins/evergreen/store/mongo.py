"""MongoDB backend of the store contract, through pymongo.

``mongodb://[user:password@]host[:port][,host...]/database?options`` (or ``mongodb+srv://``) selects a server; the
database is the URI's path (default ``evergreen``). A caller that already holds a pymongo-compatible client (one
built with ``tz_aware=True``) passes it as ``client=``; the URI then only names the database and the description.

Layout, one document per row:

* ``predictions`` -- ``{model, request_id, entity_id, ts, ts_us, model_version, arm, prediction, score,
  features: {name: value}}``; unique index ``(model, request_id)``, index ``(model, ts)``;
* ``outcomes`` -- ``{model, request_id, ts, ts_us, label, landing_key}``; the same indexes (a document written
  before outcomes carried a landing key has none: it reads as ``""``);
* ``records`` -- ``{kind, key, model, ts, ts_us, payload}``; unique index ``(kind, key)``, index ``(kind, model, ts)``.

Timestamps: BSON dates keep milliseconds only, so each document carries ``ts`` (a UTC date truncated to the
millisecond, for people, tools and the indexes) and ``ts_us`` (the exact integer microseconds since the epoch).
Window queries bound ``ts`` with the enclosing milliseconds, which the ``(model, ts)`` index serves, and ``ts_us``
exactly; reads return ``ts_us``. Results are sorted by ``(ts_us, request_id)`` in the client (strings compare by
code point, i.e. as UTF-8 bytes, the order of the SQL backend), which also keeps a big window clear of the
server's in-memory sort limit.

Record payloads are kept as the canonical JSON text the SQL backend keeps (sorted keys): any JSON-able payload is
valid on every server version (field names with dots or a leading ``$`` -- MLflow tag names are dotted -- are not
valid before MongoDB 5.0), append-only checks compare that text, and reads return exactly what SQL returns.

Writes are unordered ``bulk_write`` batches of upserts keyed by the unique index, so re-running a write converges
to the same documents. A batch is not one transaction (MongoDB has multi-document transactions only on replica
sets): a write interrupted half way leaves some rows written, and retrying it completes it.

Outcomes are conditional upserts: an ``UpdateOne`` whose filter adds the correction rule
(:func:`evergreen.corrections.wins`) to the key -- the stored document must *lose* to the new outcome -- with
``upsert=True``. One document update is atomic, so the compare and the write cannot interleave with another
writer's. When the stored document wins, the filter matches nothing and the upsert's insert collides with the unique
index (duplicate key, E11000); the same happens when two writers insert a new request id at once. Those operations
are retried as plain filtered updates (no upsert): the document exists by then, and the filter decides.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from evergreen.corrections import LANDING_KEY
from evergreen.store.base import (
    OUTCOME_DTYPES,
    PREDICTION_COLUMNS,
    PREDICTION_DTYPES,
    Record,
    RecordConflict,
    Store,
    StoreError,
    feature_arrays,
    feature_documents,
    features_frame,
    float_column,
    from_micros,
    last_per_request,
    micros_column,
    micros_to_series,
    outcome_rows,
    str_column,
    to_micros,
)

if TYPE_CHECKING:
    import pandas as pd
    from pymongo import MongoClient
    from pymongo.collection import Collection

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "evergreen"
_BATCH = 10_000  # operations per bulk_write: bounded client memory; pymongo splits further at 48 MB messages
_ID_BATCH = 10_000  # request ids per $in query
_SCHEMES = ("mongodb", "mongodb+srv")


class MongoStore(Store):
    """The store on one MongoDB database.

    ``client`` is a pymongo-compatible client built with ``tz_aware=True``, for a caller that builds its own (an
    in-process stand-in, a client shared with other code); the store closes it on :meth:`close`. Without it the
    store builds a ``pymongo.MongoClient`` from ``uri`` and ``client_kwargs``.
    """

    def __init__(self, uri: str, *, batch_size: int = _BATCH, client: MongoClient | None = None,
                 **client_kwargs: Any) -> None:
        self.uri = uri
        self.batch_size = batch_size
        parts = urllib.parse.urlsplit(uri)
        self.database_name = urllib.parse.unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE
        self.description = _redact(uri)
        if client is not None:
            if client_kwargs:
                raise StoreError(f"{self.description}: client options {sorted(client_kwargs)} given with a client; "
                                 "build the client with them instead")
            self.client = client
        elif parts.scheme in _SCHEMES:
            import pymongo

            client_kwargs.setdefault("tz_aware", True)
            self.client = pymongo.MongoClient(uri, **client_kwargs)
        else:
            raise StoreError(f"{self.description}: not a MongoDB URI; use mongodb://host/database")
        db = self.client[self.database_name]
        self.predictions: Collection = db["predictions"]
        self.outcomes: Collection = db["outcomes"]
        self.records: Collection = db["records"]
        self._create_indexes()

    def _create_indexes(self) -> None:
        from pymongo import ASCENDING

        for coll in (self.predictions, self.outcomes):
            coll.create_index([("model", ASCENDING), ("request_id", ASCENDING)], unique=True, name="model_request_id")
            coll.create_index([("model", ASCENDING), ("ts", ASCENDING)], name="model_ts")
        self.records.create_index([("kind", ASCENDING), ("key", ASCENDING)], unique=True, name="kind_key")
        self.records.create_index(
            [("kind", ASCENDING), ("model", ASCENDING), ("ts", ASCENDING)], name="kind_model_ts"
        )

    # --- helpers -----------------------------------------------------------------------------------
    def _bulk_upsert(self, coll: Collection, model: str, what: str, docs: list[dict[str, Any]]) -> None:
        from pymongo import ReplaceOne
        from pymongo.errors import BulkWriteError, PyMongoError

        for i in range(0, len(docs), self.batch_size):
            ops = [
                ReplaceOne({"model": d["model"], "request_id": d["request_id"]}, d, upsert=True)
                for d in docs[i : i + self.batch_size]
            ]
            try:
                coll.bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                first = errors[0].get("errmsg") if errors else exc
                raise StoreError(
                    f"{self.description}: {len(errors)} {what} rows for model '{model}' were not written "
                    f"(first error: {first}); the call is idempotent: fix the cause and write the batch again"
                ) from exc
            except PyMongoError as exc:
                raise StoreError(f"{self.description}: writing {what} for model '{model}' failed: {exc}") from exc

    def _find(
        self,
        coll: Collection,
        model: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        request_ids: Iterable[str] | None,
        fields: Sequence[str],
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"model": model}
        query.update(_window(start, end))
        projection = {"_id": 0, **{f: 1 for f in fields}}
        if request_ids is None:
            docs = list(coll.find(query, projection))
        else:
            ids = sorted({str(r) for r in request_ids})
            docs = []
            for i in range(0, len(ids), _ID_BATCH):
                docs.extend(coll.find({**query, "request_id": {"$in": ids[i : i + _ID_BATCH]}}, projection))
        docs.sort(key=lambda d: (d["ts_us"], d["request_id"]))
        return docs

    # --- predictions -------------------------------------------------------------------------------
    def upsert_predictions(self, model: str, df: pd.DataFrame, feature_names: Sequence[str]) -> int:
        df = last_per_request(self.description, "predictions", model, df, (*PREDICTION_COLUMNS, *feature_names))
        if df.empty:
            return 0
        ctx = (self.description, "predictions", model)
        features = feature_documents(feature_arrays(self.description, model, df, feature_names), len(df))
        ts_us = micros_column(*ctx, df["ts"])
        columns = {
            "request_id": str_column(df, "request_id"),
            "entity_id": str_column(df, "entity_id"),
            "ts": _millisecond_dates(ts_us),
            "ts_us": ts_us.tolist(),
            "model_version": str_column(df, "model_version"),
            "arm": str_column(df, "arm"),
            "prediction": float_column(*ctx, df, "prediction"),
            "score": float_column(*ctx, df, "score"),
            "features": features,
        }
        names = list(columns)
        docs = [{"model": model, **dict(zip(names, values))} for values in zip(*columns.values())]
        self._bulk_upsert(self.predictions, model, "predictions", docs)
        return len(docs)

    def read_predictions(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        import pandas as pd

        fields = ("request_id", "entity_id", "ts_us", "model_version", "arm", "prediction", "score", "features")
        docs = self._find(self.predictions, model, start, end, request_ids, fields)
        frame = _frame(docs, PREDICTION_DTYPES)
        features = features_frame([d.get("features") or {} for d in docs])
        return pd.concat([frame, features], axis=1) if features.shape[1] else frame

    # --- outcomes ----------------------------------------------------------------------------------
    def upsert_outcomes(self, model: str, df: pd.DataFrame) -> int:
        import pandas as pd

        rows = outcome_rows(self.description, model, df)
        if not len(rows):
            return 0
        dates = _millisecond_dates(pd.Series(rows.ts_us, dtype="int64"))
        written = 0
        for i in range(0, len(rows), self.batch_size):
            docs = [
                {"model": model, "request_id": r, "ts": t, "ts_us": us, "label": lab, LANDING_KEY: key}
                for r, t, us, lab, key in zip(rows.request_id[i : i + self.batch_size], dates[i : i + self.batch_size],
                                              rows.ts_us[i : i + self.batch_size], rows.label[i : i + self.batch_size],
                                              rows.landing_key[i : i + self.batch_size])
            ]
            written += self._conditional_upsert(model, docs)
        return written

    def _conditional_upsert(self, model: str, docs: list[dict[str, Any]]) -> int:
        """Upsert outcome documents where each wins by the correction rule; returns how many were written."""
        from pymongo import UpdateOne
        from pymongo.errors import BulkWriteError, PyMongoError

        def op(doc: dict[str, Any], upsert: bool) -> UpdateOne:
            return UpdateOne(_loses_to(doc), {"$set": doc}, upsert=upsert)

        try:
            result = self.outcomes.bulk_write([op(d, True) for d in docs], ordered=False)
            return result.upserted_count + result.matched_count
        except BulkWriteError as exc:
            details = exc.details
            errors = details.get("writeErrors", [])
            collided = [e for e in errors if e.get("code") == _DUPLICATE_KEY]
            if len(collided) < len(errors):
                other = next(e for e in errors if e.get("code") != _DUPLICATE_KEY)
                raise StoreError(
                    f"{self.description}: {len(errors) - len(collided)} outcomes rows for model '{model}' were not "
                    f"written (first error: {other.get('errmsg')}); the call is idempotent: fix the cause and write "
                    "the batch again"
                ) from exc
            written = details.get("nUpserted", 0) + details.get("nMatched", 0)
        except PyMongoError as exc:
            raise StoreError(f"{self.description}: writing outcomes for model '{model}' failed: {exc}") from exc
        # The request ids exist now: the same filter without upsert either replaces (the new outcome wins) or
        # matches nothing (the stored one wins).
        retry = [op(docs[e["index"]], False) for e in collided]
        try:
            result = self.outcomes.bulk_write(retry, ordered=False)
        except PyMongoError as exc:
            raise StoreError(f"{self.description}: writing outcomes for model '{model}' failed: {exc}") from exc
        return written + result.matched_count

    def read_outcomes(self, model, start=None, end=None, request_ids=None) -> pd.DataFrame:
        docs = self._find(self.outcomes, model, start, end, request_ids, ("request_id", "ts_us", "label", LANDING_KEY))
        for d in docs:
            d.setdefault(LANDING_KEY, "")
        return _frame(docs, OUTCOME_DTYPES)

    # --- records -----------------------------------------------------------------------------------
    def put_record(self, record: Record, *, append_only: bool = False) -> None:
        from pymongo.errors import DuplicateKeyError

        payload = json.dumps(record.payload, sort_keys=True, default=str)
        us = to_micros(record.ts)
        doc = {
            "kind": record.kind,
            "key": record.key,
            "model": record.model,
            "ts": _millisecond_date(us),
            "ts_us": us,
            "payload": payload,
        }
        key = {"kind": record.kind, "key": record.key}
        if not append_only:
            self.records.replace_one(key, doc, upsert=True)
            return
        try:
            # insert-if-absent through the unique (kind, key) index: racing writers cannot both win
            self.records.insert_one(doc)
        except DuplicateKeyError:
            existing = self.records.find_one(key, {"payload": 1})
            if existing is None or existing["payload"] != payload:
                raise RecordConflict(
                    f"{self.description}: append-only record {record.kind}/{record.key} already exists with a "
                    "different payload; append a new record instead of rewriting history"
                ) from None

    def get_record(self, kind: str, key: str) -> Record | None:
        doc = self.records.find_one({"kind": kind, "key": key}, {"_id": 0})
        return None if doc is None else _record(doc)

    def list_records(self, kind, model=None, start=None, end=None) -> list[Record]:
        query: dict[str, Any] = {"kind": kind}
        if model is not None:
            query["model"] = model
        query.update(_window(start, end))
        docs = sorted(self.records.find(query, {"_id": 0}), key=lambda d: (d["ts_us"], d["key"]))
        return [_record(d) for d in docs]

    def delete_records(self, kind, model, start, end) -> int:
        result = self.records.delete_many({"kind": kind, "model": model, **_window(start, end)})
        return result.deleted_count

    def close(self) -> None:
        self.client.close()


#: MongoDB's error code for a write that would break a unique index
_DUPLICATE_KEY = 11000


def _loses_to(doc: dict[str, Any]) -> dict[str, Any]:
    """The filter of the stored outcome that ``doc`` replaces: its key, and :func:`evergreen.corrections.wins` read
    from the stored side -- an earlier outcome time, or the same time and a landing key at most the new one (a
    document without a key has ``""``, which every key is at least)."""
    ts, key = doc["ts_us"], doc[LANDING_KEY]
    return {
        "model": doc["model"],
        "request_id": doc["request_id"],
        "$or": [
            {"ts_us": {"$lt": ts}},
            {"ts_us": ts, LANDING_KEY: {"$lte": key}},
            {"ts_us": ts, LANDING_KEY: {"$exists": False}},
        ],
    }


def _window(start: Any, end: Any) -> dict[str, Any]:
    """Filter for ``start <= ts < end``: millisecond dates for the index, exact microseconds for the answer."""
    query: dict[str, Any] = {}
    ts: dict[str, Any] = {}
    ts_us: dict[str, Any] = {}
    if start is not None:
        us = to_micros(start)
        ts["$gte"] = _millisecond_date(us)
        ts_us["$gte"] = us
    if end is not None:
        us = to_micros(end)
        ts["$lte"] = _millisecond_date(us - 1)  # the last millisecond that can hold a ts_us < end
        ts_us["$lt"] = us
    if ts:
        query["ts"] = ts
        query["ts_us"] = ts_us
    return query


def _millisecond_date(us: int) -> dt.datetime:
    return from_micros(us // 1000 * 1000)


def _millisecond_dates(ts_us: pd.Series) -> list[dt.datetime]:
    import pandas as pd

    floored = pd.to_datetime(ts_us // 1000, unit="ms", utc=True)
    return list(floored.array.to_pydatetime())


def _frame(docs: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    columns: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        if name == "ts":
            columns[name] = micros_to_series([d["ts_us"] for d in docs])
        else:
            columns[name] = pd.Series([d.get(name) for d in docs], dtype=dtype)
    return pd.DataFrame(columns)


def _record(doc: dict[str, Any]) -> Record:
    return Record(
        kind=doc["kind"], key=doc["key"], model=doc["model"], ts=from_micros(doc["ts_us"]),
        payload=json.loads(doc["payload"]),
    )


def _redact(uri: str) -> str:
    """The URI without its password, for logs and errors."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
