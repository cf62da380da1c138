"""The one correction rule: which of several outcomes for one request id wins.

An outcome is corrected by landing another one for the same request id. The winner is the outcome with the
**latest outcome time**; between outcomes with the same time, the one that **landed later**; never the label's
value. "Landed later" is the order of the landing key (:func:`landing_key`): landing day, then source file name
(by code point), then row number -- a value that travels with each outcome, into the store and into the lake, so
every reader can apply the rule and re-runs compute the same key. Between equal keys (the same row landed again,
or writers that give no key) the later write wins, so re-writing a row is a no-op and a plain upsert still
replaces.

Who applies it:

* the store -- atomically, as a conditional upsert (:mod:`evergreen.store.sql` builds its ``ON CONFLICT ... DO
  UPDATE ... WHERE`` predicate with :func:`wins`; :mod:`evergreen.store.mongo` filters its update on the same
  comparison), so ingestion runs of different intervals may interleave in any order;
* ingestion, within one landing day (:func:`winner_positions` in :func:`evergreen.ingest.contract.validate_day`):
  the rows that lose are quarantined as ``superseded`` (or ``duplicate_request_id`` when identical to the
  winner);
* every read of the lake's labelled partitions (:func:`read_labelled`: the training window, the champion's
  reference), since each day's partition keeps the outcomes that landed that day.

The store, training and monitoring therefore agree on every label. What the rule cannot do is retract: removing
a landed file and re-running its day does not take back an outcome the store already holds (a backfill of an old
day must never revert a later correction, and the store cannot tell the two apart); land a correction instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

#: the column (store and lake) that carries an outcome's landing key
LANDING_KEY = "landing_key"

#: digits of the zero-padded row number in a landing key
_ROW_DIGITS = 12


def landing_key(day: dt.date | str, file_name: str, row_number: int) -> str:
    """The sortable landing key of row ``row_number`` (1-based) of ``file_name`` landed on ``day``.

    ``YYYY-MM-DD/<file name as UTF-8 hex>/<row, 12 digits>``: the name is hex-encoded so that the key sorts by
    the name's code points (UTF-8 bytes) wherever strings are compared as bytes -- ``a.csv`` before
    ``a.csv.gz`` (``/`` sorts below every hex digit), which a plain name followed by a separator would get
    wrong. Only the file's name counts, not its folder or filesystem: a lake on S3 and one on local disk agree.
    """
    day_text = day if isinstance(day, str) else day.isoformat()
    if row_number < 0 or row_number >= 10**_ROW_DIGITS:
        raise ValueError(f"landing key: row number {row_number} of {file_name} is out of range")
    return f"{day_text}/{file_name.encode('utf-8').hex()}/{row_number:0{_ROW_DIGITS}d}"


def landing_keys(day: dt.date | str, file_names: Sequence[str], row_numbers: Sequence[int]) -> np.ndarray:
    """:func:`landing_key` for many rows (an object array); ``file_names`` repeat, so each is encoded once."""
    import numpy as np

    prefixes: dict[str, str] = {}
    out = np.empty(len(row_numbers), dtype=object)
    for i, (name, row) in enumerate(zip(file_names, row_numbers)):
        prefix = prefixes.get(name)
        if prefix is None:
            prefix = prefixes[name] = landing_key(day, name, 0)[: -_ROW_DIGITS]
        out[i] = f"{prefix}{int(row):0{_ROW_DIGITS}d}"
    return out


def describe_key(key: str | None) -> str:
    """A landing key for people: ``dt=2026-11-03 a.csv row 12`` (the key itself when it is not one of ours)."""
    try:
        day, name, row = str(key).split("/")
        return f"dt={day} {bytes.fromhex(name).decode('utf-8')} row {int(row)}"
    except ValueError:
        return repr(key)


def _or(a: Any, b: Any) -> Any:
    return a or b


def _and(a: Any, b: Any) -> Any:
    return a and b


def wins(
    new_ts: Any, new_key: Any, old_ts: Any, old_key: Any,
    *, or_: Callable[[Any, Any], Any] = _or, and_: Callable[[Any, Any], Any] = _and,
) -> Any:
    """True when the outcome ``(new_ts, new_key)`` replaces the one held, ``(old_ts, old_key)``: the rule.

    A later outcome time wins; at the same time the later landing key wins, and an equal key too (the later write
    of the same row). Keys are strings, ``""`` for an outcome of unknown landing (it sorts before every landing).
    With ``or_``/``and_`` (``sqlalchemy.or_``, ``sqlalchemy.and_``) and column expressions for the values, the
    same comparison builds a query predicate: that is how the SQL store applies the rule.
    """
    return or_(new_ts > old_ts, and_(new_ts == old_ts, new_key >= old_key))


def _keys(values: pd.Series) -> np.ndarray:
    """Landing keys as an object array of strings, ``""`` for missing ones."""
    import numpy as np

    out = values.to_numpy(dtype=object).copy()
    missing = values.isna().to_numpy()
    out[missing] = ""
    return np.asarray(out, dtype=object)


def winner_positions(ids: pd.Series, ts: pd.Series, keys: pd.Series | None = None) -> np.ndarray:
    """For each row, the position (0-based) of the row that wins its request id by the rule.

    The rows are outcomes in write order (``ids``, ``ts`` and ``keys`` aligned, any index); a row wins when no
    other row of its id beats it by :func:`wins` folded in order: the latest ``ts``, then the latest key, then
    the last row. A row is its own winner when its id is unique, which most are; only repeated ids are sorted.
    """
    import numpy as np
    import pandas as pd

    n = len(ids)
    out = np.arange(n)
    id_values = pd.Series(ids.to_numpy(dtype=object))
    repeated = np.flatnonzero(id_values.duplicated(keep=False).to_numpy())
    if not len(repeated):
        return out
    key_values = _keys(keys) if keys is not None else np.full(n, "", dtype=object)
    part = pd.DataFrame({
        "id": id_values.to_numpy()[repeated],
        "ts": ts.iloc[repeated].reset_index(drop=True),
        "key": key_values[repeated],
        "pos": repeated,
    }).sort_values(["id", "ts", "key", "pos"], kind="stable")
    last = ~part["id"].duplicated(keep="last").to_numpy()
    group = np.cumsum(np.r_[True, part["id"].to_numpy()[1:] != part["id"].to_numpy()[:-1]]) - 1
    winners = part["pos"].to_numpy()[last]  # one per group, in group order
    out[part["pos"].to_numpy()] = winners[group]
    return out


def latest(frame: pd.DataFrame, *, ts: str = "outcome_ts", key: str = LANDING_KEY, by: str = "request_id"
           ) -> pd.DataFrame:
    """``frame`` with one row per ``by`` value, the rule's winner (rows keep their order; the index is reset).

    A frame without the ``key`` column is treated as having no landing keys (the later row wins a tie).
    """
    import numpy as np

    if frame.empty:
        return frame.reset_index(drop=True)
    win = winner_positions(frame[by], frame[ts], frame[key] if key in frame.columns else None)
    keep = win == np.arange(len(frame))
    if keep.all():
        return frame.reset_index(drop=True)
    return frame[keep].reset_index(drop=True)


def read_labelled(
    model: str, start: dt.date, end: dt.date, root: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """The lake's labelled examples of days ``start <= day < end`` with the rule applied: one row per request id.

    Each day's partition holds the outcomes that landed that day, so a request corrected on a later day has a row
    in both; only the winner is returned (a correction that lands after ``end`` is not seen: the window is what
    had landed by its end). Returns the frame and the partition URIs read, in day order (missing days are
    skipped). A partition written before landing keys existed gets the key ``YYYY-MM-DD/`` of its day for every
    row: after every earlier day's landings, before any keyed landing of the same day.
    """
    from evergreen import lake

    def keyed(frame: pd.DataFrame, day: dt.date) -> pd.DataFrame:
        if LANDING_KEY not in frame.columns:
            frame[LANDING_KEY] = f"{lake.day_str(day)}/"
        return frame

    frame, read = lake.read_partitions(model, "labelled", start, end, root, each=keyed)
    if not read:
        return frame, read
    kept = latest(frame)
    if len(kept) < len(frame):
        log.info("%s labelled [%s, %s): %d of %d rows superseded by a later outcome for the same request id",
                 model, start, end, len(frame) - len(kept), len(frame))
    return kept, read
