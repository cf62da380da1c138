"""The store contract: one narrow interface, two backends (SQL through SQLAlchemy, MongoDB through pymongo).

Three kinds of data:

* predictions -- one row per scoring request: request id, entity id, timestamp, model, version, A/B arm,
  the features as logged, the prediction and its score;
* outcomes -- ground truth, one row per request id: timestamp of the outcome and the label;
* records -- platform records (ingestion stats, monitoring results, retrain decisions, ledger entries):
  a JSON payload keyed by ``(kind, key)`` with the model and a timestamp for window reads.

Writes are idempotent upserts keyed by ids, each call one transaction where the backend has them. Reads are
bounded by a half-open time window ``[start, end)`` (or an explicit set of request ids) and return DataFrames
with the features as columns. Timestamps go in and come out as timezone-aware UTC.

Every backend passes ``tests/plugins/evergreen/store/test_contract.py``.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

PREDICTION_COLUMNS = ("request_id", "entity_id", "ts", "model_version", "arm", "prediction", "score")
OUTCOME_COLUMNS = ("request_id", "ts", "label")


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
        """Insert or replace outcomes keyed by ``(model, request_id)``; ``df`` has :data:`OUTCOME_COLUMNS`."""

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


def open_store(uri: str) -> Store:
    """A store for a URI: ``sqlite:///path``, ``postgresql://...`` (SQLAlchemy) or ``mongodb://...`` (pymongo)."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("mongodb", "mongodb+srv", "mongomock"):
        from evergreen.store.mongo import MongoStore

        return MongoStore(uri)
    if scheme.split("+")[0] in ("sqlite", "postgresql", "postgres", "mysql"):
        from evergreen.store.sql import SqlStore

        return SqlStore(uri)
    raise StoreError(
        f"store URI scheme '{scheme}' is not supported; use sqlite:///path, postgresql://host/db or mongodb://host/db"
    )
