"""The store contract: one narrow interface, two backends (SQL through SQLAlchemy, MongoDB through pymongo).

Three kinds of data:

* predictions -- one row per scoring request: request id, entity id, timestamp, model, version, A/B arm,
  the features as logged, the prediction and its score;
* outcomes -- ground truth, one row per request id: timestamp of the outcome, the label and the landing key of
  where it landed (:data:`evergreen.corrections.LANDING_KEY`);
* records -- platform records (ingestion stats, monitoring results, retrain decisions, ledger entries):
  a JSON payload keyed by ``(kind, key)`` with the model and a timestamp for window reads.

Writes are idempotent upserts keyed by ids, each call one transaction where the backend has them. Outcome writes
are *conditional*: a stored outcome is replaced only when the new one wins by the correction rule
(:func:`evergreen.corrections.wins`: the later outcome time, then the later landing key; never the label), and the
compare and the write are one atomic operation inside the backend, so concurrent writers (a backfill beside the
daily run) end with the rule's winner whatever the interleaving. Reads are bounded by a half-open time window
``[start, end)`` (or an explicit set of request ids) and return DataFrames with the features as columns.
Timestamps go in and come out as timezone-aware UTC.

Every backend passes ``tests/plugins/evergreen/store/test_contract.py``. This module is the contract only: it
imports no backend (:func:`evergreen.store.open_store` picks one for a URI).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.corrections import LANDING_KEY

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("request_id", "entity_id", "ts", "model_version", "arm", "prediction", "score")
#: what outcome reads return; writes need :data:`OUTCOME_REQUIRED`, the landing key is optional (``""`` without)
OUTCOME_COLUMNS = ("request_id", "ts", "label", LANDING_KEY)
OUTCOME_REQUIRED = ("request_id", "ts", "label")

#: dtypes of the base columns every backend's reads return (feature columns follow, as decoded by
#: :func:`decode_feature_json` / :func:`features_frame`); empty reads keep them too.
PREDICTION_DTYPES = {
    "request_id": "object",
    "entity_id": "object",
    "ts": "datetime64[ns, UTC]",
    "model_version": "object",
    "arm": "object",
    "prediction": "float64",
    "score": "float64",
}
OUTCOME_DTYPES = {"request_id": "object", "ts": "datetime64[ns, UTC]", "label": "float64", LANDING_KEY: "object"}

#: longest ids the SQL schema holds (PostgreSQL enforces them, SQLite would not): checked on every backend so
#: a write that works on one works on all
ID_LIMITS = {"model": 64, "request_id": 128, "entity_id": 128, "model_version": 64, "arm": 32}


class StoreError(RuntimeError):
    """A store operation failed; the message names the store, the model and what to do."""


class RecordConflict(StoreError):
    """An append-only record already exists with a different payload."""


@dataclass(frozen=True)
class Record:
    kind: str
    key: str
    model: str
    ts: dt.datetime
    payload: dict[str, Any] = field(default_factory=dict)


def to_utc(value: Any) -> dt.datetime:
    """A timezone-aware UTC datetime from a datetime, pandas Timestamp or ISO string (naive means UTC)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


# --- helpers shared by the backends --------------------------------------------------------------------
# Both backends keep timestamps as integer microseconds since the epoch (UTC) -- exact, sortable and the same
# everywhere -- and encode/decode features through the functions below, so reads are identical across backends.

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def to_micros(value: Any) -> int:
    delta = to_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(value))


def series_to_micros(values: pd.Series) -> pd.Series:
    """Vectorised :func:`to_micros` for a column of timestamps (naive values are taken as UTC; text is ISO 8601)."""
    import pandas as pd
    from pandas.api.types import is_datetime64_any_dtype

    if not is_datetime64_any_dtype(values):
        # Text or Python objects: each row on its own, through to_utc. pandas' ISO 8601 parser would let a naive
        # string take the UTC offset of an earlier row, and would read numbers as nanoseconds since the epoch.
        values = pd.Series(
            [None if pd.isna(v) else to_utc(v) for v in values.tolist()],
            index=values.index, dtype=object,
        )
    ts = pd.to_datetime(values, utc=True)
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64")


def micros_to_series(values: Any) -> pd.Series:
    """Integer microseconds to the ``datetime64[ns, UTC]`` column the reads return."""
    import pandas as pd

    return pd.to_datetime(pd.Series(values, dtype="int64"), unit="us", utc=True)


def check_frame(description: str, what: str, model: str, df: pd.DataFrame, required: Sequence[str]) -> None:
    """Raise a :class:`StoreError` naming the model and the columns when ``df`` cannot be written."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StoreError(
            f"{description}: {what} for model '{model}' lack columns {missing}; "
            f"expected {list(required)}, got {list(df.columns)}"
        )
    if len(model) > ID_LIMITS["model"]:
        raise StoreError(f"{description}: model name '{model}' is longer than {ID_LIMITS['model']} characters")
    for col in ("request_id", "ts"):
        nulls = int(df[col].isna().sum())
        if nulls:
            raise StoreError(
                f"{description}: {nulls} {what} rows for model '{model}' have no '{col}'; "
                "every row needs a request id and a timestamp"
            )
    from pandas.api.types import is_string_dtype

    for col, limit in ID_LIMITS.items():
        if col in df.columns and len(df) and is_string_dtype(df[col]):
            try:
                lengths = df[col].str.len()
            except AttributeError:  # an object column without strings: numbers have short text forms
                continue
            if lengths.max() > limit:
                example = str(df[col][lengths > limit].iloc[0])
                raise StoreError(
                    f"{description}: {what} for model '{model}': column '{col}' has values longer than {limit} "
                    f"characters (e.g. '{example[:40]}...'); shorten them before writing"
                )


def last_per_request(
    description: str, what: str, model: str, df: pd.DataFrame, required: Sequence[str]
) -> pd.DataFrame:
    """Check ``df`` and keep the last row per request id, so a batch acts like its rows written in order on
    every backend (a multi-row INSERT ... ON CONFLICT may not touch a row twice in PostgreSQL; an unordered
    MongoDB bulk write applies its operations in any order)."""
    check_frame(description, what, model, df, required)
    duplicated = df["request_id"].astype(str).duplicated(keep="last")
    if duplicated.any():
        log.warning(
            "%s: %d %s rows for model '%s' repeat a request id; the last of each is kept",
            description, int(duplicated.sum()), what, model,
        )
        df = df[~duplicated.to_numpy()]
    return df


@dataclass(frozen=True)
class OutcomeRows:
    """Outcomes ready for a conditional upsert: one per request id (the rule's winner within the batch), sorted by
    request id (so concurrent writers lock rows in the same order), as plain Python columns."""

    request_id: list[str]
    ts_us: list[int]
    label: list[float | None]
    landing_key: list[str]

    def __len__(self) -> int:
        return len(self.request_id)


def outcome_rows(description: str, model: str, df: pd.DataFrame) -> OutcomeRows:
    """Check an outcome batch and reduce it by the correction rule, so a batch acts like its rows written in order
    under the rule on every backend (a multi-row INSERT ... ON CONFLICT may not touch a row twice in PostgreSQL;
    an unordered MongoDB bulk write applies its operations in any order)."""
    import numpy as np
    import pandas as pd

    from evergreen.corrections import winner_positions

    check_frame(description, "outcomes", model, df, OUTCOME_REQUIRED)
    ids = pd.Series(str_column(df, "request_id"), dtype=object)
    ts_us = micros_column(description, "outcomes", model, df["ts"]).reset_index(drop=True)
    labels = float_column(description, "outcomes", model, df, "label")
    if LANDING_KEY in df.columns:
        keys = pd.Series(str_column(df, LANDING_KEY), dtype=object).fillna("")
    else:
        keys = pd.Series([""] * len(df), dtype=object)
    keep = winner_positions(ids, ts_us, keys) == np.arange(len(df))
    if not keep.all():
        log.info("%s: %d outcome rows for model '%s' repeat a request id; the correction rule keeps one of each",
                 description, int((~keep).sum()), model)
    order = np.flatnonzero(keep)
    order = order[np.argsort(ids.to_numpy()[order], kind="stable")]
    return OutcomeRows(
        request_id=ids.to_numpy()[order].tolist(),
        ts_us=ts_us.to_numpy()[order].tolist(),
        label=[labels[i] for i in order.tolist()],
        landing_key=keys.to_numpy()[order].tolist(),
    )


def micros_column(description: str, what: str, model: str, values: pd.Series) -> pd.Series:
    """The ``ts`` column as int64 microseconds, or a :class:`StoreError` naming the model and a bad value."""
    try:
        return series_to_micros(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise StoreError(
            f"{description}: {what} for model '{model}': column 'ts' holds a value that is not a timestamp ({exc}); "
            "pass datetimes or ISO 8601 strings"
        ) from exc


def float_column(description: str, what: str, model: str, df: pd.DataFrame, col: str) -> list[float | None]:
    """A numeric column as Python floats with None for missing, or a :class:`StoreError` naming it."""
    import pandas as pd

    try:
        values = pd.to_numeric(df[col], errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise StoreError(
            f"{description}: {what} for model '{model}': column '{col}' must be numeric ({exc})"
        ) from exc
    return values.astype(object).where(values.notna(), None).tolist()


def str_column(df: pd.DataFrame, col: str) -> list[str | None]:
    """A column as Python strings with None for missing (None, NaN, NA)."""
    values = df[col].astype(object)
    missing = values.isna().tolist()
    return [None if m else str(v) for v, m in zip(values.tolist(), missing)]


def feature_arrays(description: str, model: str, df: pd.DataFrame, feature_names: Sequence[str]) -> dict[str, pa.Array]:
    """Feature columns as Arrow arrays of int64, float64, bool, string or null.

    NaN, NaT and infinities become null (JSON, which the SQL backend keeps, has no infinity). A column of any
    other type, or mixing types, is refused with an error naming the feature.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reserved = {*PREDICTION_COLUMNS, "model", "features", "_id"}
    clash = [f for f in feature_names if f in reserved]
    if clash:
        raise StoreError(f"{description}: model '{model}' has features named like store columns: {clash}; rename them")
    out: dict[str, pa.Array] = {}
    for name in feature_names:
        try:
            arr = pa.array(df[name], from_pandas=True)
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            if pa.types.is_floating(arr.type):
                arr = pc.cast(arr, pa.float64())
                arr = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
            elif pa.types.is_integer(arr.type):
                arr = pc.cast(arr, pa.int64())
            elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                arr = pc.cast(arr, pa.string())
            elif not (pa.types.is_boolean(arr.type) or pa.types.is_null(arr.type)):
                raise StoreError(
                    f"{description}: feature '{name}' of model '{model}' has values of type {arr.type}; "
                    "features are int, float, bool or string (category) values"
                )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(
                f"{description}: feature '{name}' of model '{model}' cannot be stored ({exc}); "
                "a feature's values must all be numbers, all booleans or all strings"
            ) from exc
        out[name] = arr
    return out


def _json_text(arr: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_null(arr.type):
        return pa.array(["null"] * len(arr), pa.string())
    if pa.types.is_boolean(arr.type):
        text = pc.if_else(arr, "true", "false")
    elif pa.types.is_integer(arr.type):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_floating(arr.type):
        # Arrow prints the shortest text that reads back to the same double; a whole number prints without a
        # point ("5"), which a JSON reader would take for an integer, so it gets ".0".
        text = pc.cast(arr, pa.string())
        text = pc.if_else(pc.match_substring_regex(text, "[.eE]"), text, pc.binary_join_element_wise(text, ".0", ""))
    else:  # strings: few distinct values (categories), so escape each distinct value once
        encoded = arr.dictionary_encode()
        escaped = pa.array([json.dumps(v) for v in encoded.dictionary.to_pylist()], pa.string())
        text = pc.take(escaped, encoded.indices)
    return pc.fill_null(text, "null")


def encode_feature_json(arrays: Mapping[str, pa.Array], n: int) -> list[str]:
    """One JSON object per row from :func:`feature_arrays` (exact: floats keep every bit)."""
    import pyarrow.compute as pc

    if not arrays:
        return ["{}"] * n
    parts: list[Any] = []
    for i, (name, arr) in enumerate(arrays.items()):
        parts.append(("{" if i == 0 else ",") + json.dumps(name) + ":")
        parts.append(_json_text(arr))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "").to_pylist()


def feature_documents(arrays: Mapping[str, pa.Array], n: int) -> list[dict[str, Any]]:
    """One dict of Python values per row from :func:`feature_arrays` (for document stores)."""
    if not arrays:
        return [{} for _ in range(n)]
    names = list(arrays)
    columns = [arrays[name].to_pylist() for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def decode_feature_json(lines: Sequence[str]) -> pd.DataFrame:
    """Feature columns from JSON objects, one per row, in order of first appearance.

    Types follow the values: integers give int64 (float64 with nulls), numbers float64, booleans bool (object
    with nulls), strings object. Strings stay strings even when they look like dates (Arrow's JSON reader would
    turn a column of them into timestamps).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.json as pj

    if not lines:
        return pd.DataFrame(index=pd.RangeIndex(0))
    blob = "\n".join(lines).encode()
    table = pj.read_json(io.BytesIO(blob))
    dated = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if dated:
        options = pj.ParseOptions(
            explicit_schema=pa.schema([pa.field(name, pa.string()) for name in dated]),
            unexpected_field_behavior="infer",
        )
        # an explicit schema puts its fields first: keep the order of first appearance
        table = pj.read_json(io.BytesIO(blob), parse_options=options).select(table.column_names)
    if table.num_columns == 0:
        return pd.DataFrame(index=pd.RangeIndex(len(lines)))
    return table.to_pandas()


def features_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Feature columns from one dict per row, typed exactly as :func:`decode_feature_json` types them."""
    import pandas as pd
    import pyarrow as pa

    names = list(dict.fromkeys(name for row in rows for name in row))
    if not names:
        return pd.DataFrame(index=pd.RangeIndex(len(rows)))
    try:
        arrays = [pa.array([row.get(name) for row in rows]) for name in names]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StoreError(f"stored features mix value types and cannot form columns: {exc}") from exc
    return pa.table(arrays, names=names).to_pandas()


class Store(ABC):
    """The contract. Implementations: :class:`evergreen.store.sql.SqlStore`, :class:`evergreen.store.mongo.MongoStore`."""

    #: a short, credential-free description for logs and errors
    description: str = "store"

    # --- predictions ------------------------------------------------------------------------------
    @abstractmethod
    def upsert_predictions(self, model: str, df: pd.DataFrame, feature_names: Sequence[str]) -> int:
        """Insert or replace predictions keyed by ``(model, request_id)``.

        ``df`` has the columns of :data:`PREDICTION_COLUMNS` plus one column per name in ``feature_names``.
        Returns the number of rows written.
        """

    @abstractmethod
    def read_predictions(
        self,
        model: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        request_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Predictions with ``start <= ts < end`` (and/or the given request ids), features as columns,
        sorted by ``(ts, request_id)``. Empty windows give an empty frame with the base columns."""

    # --- outcomes ---------------------------------------------------------------------------------
    @abstractmethod
    def upsert_outcomes(self, model: str, df: pd.DataFrame) -> int:
        """Insert outcomes keyed by ``(model, request_id)``, or replace a stored one where the new one wins by the
        correction rule (:func:`evergreen.corrections.wins`), atomically per row.

        ``df`` has :data:`OUTCOME_REQUIRED` and optionally the landing key (``""`` when absent: a write without
        a key loses a tie to any landed outcome of the same time, and wins it against another keyless one).
        Rows repeating a request id are reduced by the same rule first. Returns the number of rows inserted or
        replaced (re-writing an identical row counts); the others lost to the stored outcome.
        """

    @abstractmethod
    def read_outcomes(
        self,
        model: str,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        request_ids: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """Outcomes with ``start <= ts < end`` (and/or the given request ids), sorted by ``(ts, request_id)``."""

    # --- platform records -------------------------------------------------------------------------
    @abstractmethod
    def put_record(self, record: Record, *, append_only: bool = False) -> None:
        """Upsert a record keyed by ``(kind, key)``.

        With ``append_only`` an existing record is never changed: writing the same payload again is a no-op
        (so retries stay idempotent) and a different payload raises :class:`RecordConflict`.
        """

    @abstractmethod
    def get_record(self, kind: str, key: str) -> Record | None:
        """One record, or None."""

    @abstractmethod
    def list_records(
        self,
        kind: str,
        model: str | None = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> list[Record]:
        """Records of a kind (optionally of one model, with ``start <= ts < end``), sorted by ``(ts, key)``."""

    @abstractmethod
    def delete_records(self, kind: str, model: str, start: dt.datetime, end: dt.datetime) -> int:
        """Delete the records of a kind and model in a window (a re-run replaces its interval's records)."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
