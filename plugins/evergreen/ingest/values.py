"""Parsing one landed value by the contract's rules: text, numbers, booleans and timestamps (each timestamp on its
own, by the store's ``to_utc`` rule, so one row's offset never leaks into the next).

Split from :mod:`evergreen.ingest.contract`, which decides what is valid; this module only turns raw cells into
typed values (None/NaT where a value cannot be read, for the contract to report).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_TRUE = ("true", "t", "yes", "y", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "0", "0.0")


def _as_text(s: pd.Series) -> pd.Series:
    """Values as ``str`` with nulls as None: ids and categories may arrive as numbers in a Parquet file."""
    import pandas as pd

    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s
    return s.astype(object).where(s.isna(), s.astype(str)).where(s.notna(), None)


def _parse_numbers(s: pd.Series) -> pd.Series:
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_bool_dtype(s.dtype) or is_numeric_dtype(s.dtype):
        return s.astype("float64")
    return pd.to_numeric(s, errors="coerce").astype("float64")


def _utc_or_none(value: Any) -> dt.datetime | None:
    """One value by the store's rule (:func:`evergreen.store.base.to_utc`), None when it is not a time."""
    from evergreen.store.base import to_utc

    if isinstance(value, str):
        value = value.strip()
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())  # a Parquet date: midnight, as its ISO text "2026-11-03" is
    elif not isinstance(value, dt.datetime) or value != value:  # None, NaN, NA, NaT, numbers
        return None
    try:
        return to_utc(value)
    except (TypeError, ValueError, OverflowError):
        return None


#: the datetimes Python (and so the store's rule) can hold, in microseconds since the epoch
_PY_RANGE_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)


def _parse_text_timestamps_fast(s: pd.Series) -> pd.Series | None:
    """The common case in C: every value is text that Arrow's ISO-8601 parser reads, all with a UTC offset or
    all without one (then UTC). Arrow parses each value on its own (nothing leaks), and reads a subset of what
    Python's parser reads, with the same result (``test_ingest_timestamps`` holds the two to that). None when
    any value needs the per-value path: mixed naive and offset values, other shapes, bad values, non-strings."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pa.array(s.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    for target in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            ts = pc.cast(text, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        lo, hi = pc.min_max(ts.cast(pa.int64())).values()
        if lo.is_valid and not (_PY_RANGE_US[0] <= lo.as_py() and hi.as_py() <= _PY_RANGE_US[1]):
            return None  # beyond year 1..9999 after the offset: Python's rule says not a time
        out = pd.Series(ts.to_pandas(), index=s.index)
        return out if target.tz else out.dt.tz_localize("UTC")
    return None


def _parse_timestamps(s: pd.Series) -> pd.Series:
    """UTC microsecond timestamps; NaT for null or unparseable values (naive times are taken as UTC).

    Text follows the store's rule (:func:`evergreen.store.base.to_utc`) value by value. pandas' vectorised
    ISO-8601 parser is not used: it lets one row's UTC offset leak into the next naive row (``10:00+05:00`` then
    ``10:00`` gives 05:00Z twice).
    """
    import pandas as pd
    from pandas.api.types import is_datetime64_any_dtype

    if is_datetime64_any_dtype(s.dtype):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        # The store keeps microseconds; truncating here makes file, store and lake agree exactly.
        return ts.dt.floor("us").astype("datetime64[us, UTC]")
    if s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        fast = _parse_text_timestamps_fast(s)
        if fast is not None:
            return fast.astype("datetime64[us, UTC]")
        # Python's ISO parser truncates to microseconds, like the floor above.
        values = pd.array([_utc_or_none(v) for v in s.tolist()], dtype="datetime64[us, UTC]")
        return pd.Series(values, index=s.index)
    # epoch numbers are ambiguous (s, ms or us?): the contract asks for ISO-8601 times
    return pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")


def _iso(value: Any) -> str:
    """A UTC time as ISO-8601 with ``Z`` (microseconds only when there are some)."""
    import pandas as pd

    ts = pd.Timestamp(value).tz_convert("UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ts.microsecond:06d}" if ts.microsecond else "")
    return text + "Z"


def day_end(day: dt.date) -> dt.datetime:
    """The end of a landing day: the next midnight UTC (no outcome of that day's files can be later)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)


def _parse_bools(s: pd.Series) -> pd.Series:
    """True / False for recognised values, None for null or unrecognised ones (the caller tells them apart)."""
    import numpy as np
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if is_bool_dtype(s.dtype):
        return s.astype(object)
    if is_numeric_dtype(s.dtype):
        return pd.Series(np.where(s == 1, True, np.where(s == 0, False, None)), index=s.index, dtype=object)
    text = s.astype(str).str.strip().str.lower()
    present = s.notna().to_numpy()
    out = np.full(len(s), None, dtype=object)
    out[present & text.isin(_TRUE).to_numpy()] = True
    out[present & text.isin(_FALSE).to_numpy()] = False
    return pd.Series(out, index=s.index, dtype=object)
