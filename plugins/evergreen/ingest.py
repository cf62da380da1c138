"""Ground-truth ingestion: landed outcome files -> validated outcomes in the store and labelled examples in the lake.

What one run does for each day of its data interval (the ``ingest_feedback_<model>`` DAG calls
:func:`ingest_interval`; so do ``python -m evergreen.ingest``, the demo and ``bench/ingest.py``):

1. read every CSV / Parquet file under ``lake.landing_dir(model, day)`` -- for *all* days of the interval before
   anything is written, so a file that cannot be read at all fails the run with its name and changes nothing;
2. validate each row against the model's contract (:class:`evergreen.config.ModelConfig`), vectorised per column;
   a file-level problem (missing, partial or extra columns) sends every row of that file to quarantine;
3. look up the logged predictions of the outcome-only rows: an outcome with no logged prediction is quarantined
   as ``unmatched`` (its features are unknown, so it could never become a labelled example);
4. upsert the valid outcomes into the store, write the day's labelled examples and quarantine as Parquet
   partitions (always both, possibly empty, with a fixed schema) and upsert the day's ``ingestion`` record.

Every output is a function of the landed files and the logged predictions, so re-running a day, retrying after a
crash at any point, or backfilling over days already run leaves the same state. The one cross-day rule: when the
same request id lands on several days, the store keeps the outcome with the latest outcome timestamp (a
correction lands later), ties broken by the larger label, so the result never depends on the order runs happen in.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.store.base import Record

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from evergreen.config import FeatureSpec, ModelConfig
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

RECORD_KIND = "ingestion"

#: reason codes of quarantined rows and what they mean (the README lists the same)
REASON_CODES: dict[str, str] = {
    "missing_column": "a required column (request id, timestamp, label) is missing from the file",
    "partial_features": "the file carries some feature columns but not all of them",
    "extra_column": "the file has a column outside the model's contract (extra_columns: quarantine)",
    "duplicate_column": "a column name appears twice in the file's header",
    "malformed_row": "the CSV row has a different number of fields than the header",
    "null_request_id": "the request id is empty",
    "bad_timestamp": "the outcome timestamp is empty or not an ISO-8601 time",
    "null_label": "the label is empty",
    "invalid_label": "the label is not one of the model's classes",
    "wrong_type": "a feature value cannot be parsed as the feature's declared type",
    "out_of_range": "a numeric feature is below its min or above its max",
    "unknown_category": "a category feature has a value outside its declared categories",
    "null_value": "a non-nullable feature is empty",
    "duplicate_request_id": "the request id already landed earlier in the day (first occurrence wins)",
    "unmatched": "no logged prediction for the request id and the file carries no features",
}

#: values read as null in CSV files (exports from pandas, R, SQL clients and spreadsheets)
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none")
_TRUE = ("true", "t", "yes", "y", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "0", "0.0")
# Store reads by request id are chunked so the rows the driver materialises stay bounded at any N.
_READ_CHUNK = 200_000

#: fault injection for the crash tests: "<stage>[:<marker file>]" pauses the run when it reaches <stage>
PAUSE_ENV = "EVERGREEN_INGEST_PAUSE_AT"
STAGES = ("read", "store", "labelled", "quarantine")


class IngestionError(RuntimeError):
    """A landed file cannot be read at all; the message names the file. Nothing was written."""


@dataclass
class LandedFile:
    """One landed file as read: the frame (CSV as strings, Parquet as typed) and where each row came from."""

    uri: str
    fmt: str
    frame: pd.DataFrame | None  # None: an empty file (0 bytes or a header only)
    row_numbers: np.ndarray | None = None  # 1-based record numbers of the frame's rows (header not counted)
    malformed: list[tuple[int, str, int]] = field(default_factory=list)  # (row number, text, fields) of bad CSV rows
    header: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.frame is None or (len(self.frame) == 0 and not self.malformed)

    @property
    def rows(self) -> int:
        return (0 if self.frame is None else len(self.frame)) + len(self.malformed)


@dataclass
class DayResult:
    """The facts of one ingested day (the payload of its ``ingestion`` record, plus model and day)."""

    model: str
    day: str
    rows_read: int
    landed: int
    quarantined: int
    unmatched: int
    reasons: dict[str, int]
    files: list[str]
    empty_files: list[str]
    labelled_uri: str
    quarantine_uri: str

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")
        out.pop("day")
        return out

    def summary(self) -> str:
        why = ", ".join(f"{code}={n}" for code, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return (
            f"{self.model} {self.day}: {len(self.files)} file(s) ({len(self.empty_files)} empty), "
            f"{self.rows_read} rows read, {self.landed} landed, {self.quarantined} quarantined"
            f" ({self.unmatched} unmatched){': ' + why if why else ''}"
        )


# --- reading ----------------------------------------------------------------------------------------------------


def landed_uris(model: ModelConfig, day: dt.date, landing_root: str | None = None) -> list[str]:
    """The outcome files landed for ``day``, sorted by name (the order duplicates are resolved in)."""
    directory = lake.landing_dir(model.name, day, landing_root)
    files = lake.list_files(directory, model.ingestion.file_formats)
    fs, path = lake.filesystem(directory)
    if fs.exists(path):
        taken = {f.rsplit("/", 1)[-1] for f in files}
        others = sorted(n for n in (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
                        if n not in taken and not n.startswith((".", "_")))
        if others:
            log.warning("%s: ignoring %d file(s) that are not %s: %s", directory, len(others),
                        " or ".join(model.ingestion.file_formats), ", ".join(others))
    return files


def read_landed_file(uri: str) -> LandedFile:
    """Read one landed file; raise :class:`IngestionError` naming it when it cannot be read at all."""
    fmt = "parquet" if uri.lower().endswith(".parquet") else "csv"
    try:
        fs, path = lake.filesystem(uri)
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - any I/O failure is reported with the file's name
        raise IngestionError(f"outcome file {uri} cannot be read: {exc}") from exc
    if not data.strip():
        return LandedFile(uri, fmt, None)
    try:
        return _read_parquet(uri, data) if fmt == "parquet" else _read_csv(uri, data)
    except IngestionError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt input
        raise IngestionError(
            f"outcome file {uri} cannot be read as {fmt.upper()}: {exc}; fix or remove the file and re-run "
            "(nothing was written for this run)"
        ) from exc


def _read_parquet(uri: str, data: bytes) -> LandedFile:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    frame = table.to_pandas()
    return LandedFile(uri, "parquet", frame, np.arange(1, len(frame) + 1), header=list(table.column_names))


def _read_csv(uri: str, data: bytes) -> LandedFile:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    first_line = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    header = next(csv.reader([first_line]), [])
    if not any(h.strip() for h in header):
        raise IngestionError(f"outcome file {uri} has no header line; the first line must name the columns")
    malformed: list[tuple[int, str, int]] = []

    def invalid(row: Any) -> str:
        # single-threaded parsing numbers records from 1 with the header as record 1
        malformed.append((int(row.number) - 1, row.text, int(row.actual_columns)))
        return "skip"

    # A repeated header name is kept apart here (and reported by validation from ``header``).
    names = [h if header.index(h) == i else f"{h}.{i}" for i, h in enumerate(header)]
    table = pcsv.read_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
        parse_options=pcsv.ParseOptions(invalid_row_handler=invalid),
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=list(NULL_TOKENS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    frame = table.to_pandas()
    total = len(frame) + len(malformed)
    numbers = np.arange(1, total + 1)
    if malformed:
        numbers = np.setdiff1d(numbers, [m[0] for m in malformed], assume_unique=True)
    return LandedFile(uri, "csv", frame, numbers, malformed, header)


# --- validation (pure) --------------------------------------------------------------------------------------------


@dataclass
class DayValidation:
    """A day's rows split into ``good`` (typed, deduplicated) and ``bad`` (with reasons), before the store is read.

    ``good``: request_id, outcome_ts, label, entity_id, has_features, <features>, _file, _pos, row_number.
    ``bad``: _file, _pos (the row's position in its file's frame; -1 for a malformed CSV row), row_number,
    reason_code, reason, raw (None: taken from the frame when the quarantine is written).
    """

    day: dt.date
    files: list[LandedFile]
    good: pd.DataFrame
    bad: pd.DataFrame


def _expected_columns(model: ModelConfig) -> str:
    return (
        f"{model.request_id}, {model.timestamp}, {model.label.name} (required), {model.entity_id} (optional), "
        f"and either all or none of the features {', '.join(model.feature_names)}"
    )


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "null"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Problems:
    """Row-level problems of one file, collected check by check and merged into one reason per row."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def add(self, mask: np.ndarray, code: str, reason: str, values: pd.Series | None = None, after: str = "") -> None:
        """Record ``code`` for the rows in ``mask``: the reason is ``reason`` (+ the row's value + ``after``)."""
        import numpy as np
        import pandas as pd

        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        # Python only formats the failing rows' messages; the checks themselves are vectorised.
        if values is None:
            msgs: Any = reason
        else:
            msgs = [f"{reason}{_show(v)}{after}" for v in values.iloc[idx].tolist()]
        self.parts.append(pd.DataFrame({"_pos": idx, "_order": len(self.parts), "reason_code": code, "reason": msgs}))

    def merged(self) -> pd.DataFrame:
        """``_pos, reason_code, reason``: the first problem's code, all problems' reasons joined."""
        import pandas as pd

        if not self.parts:
            return pd.DataFrame({"_pos": pd.Series(dtype="int64"), "reason_code": pd.Series(dtype=object),
                                 "reason": pd.Series(dtype=object)})
        allp = pd.concat(self.parts, ignore_index=True).sort_values(["_pos", "_order"], kind="stable")
        grouped = allp.groupby("_pos", sort=True)
        return pd.DataFrame({"reason_code": grouped["reason_code"].first(),
                             "reason": grouped["reason"].agg("; ".join)}).reset_index()


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


def _parse_timestamps(s: pd.Series) -> pd.Series:
    """UTC microsecond timestamps; NaT for null or unparseable values (naive times are taken as UTC)."""
    import pandas as pd
    from pandas.api.types import is_datetime64_any_dtype

    if is_datetime64_any_dtype(s.dtype):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    elif s.dtype == object or isinstance(s.dtype, pd.StringDtype):
        ts = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
    else:  # epoch numbers are ambiguous (s, ms or us?): the contract asks for ISO-8601 times
        ts = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    # The store keeps microseconds; truncating here makes file, store and lake agree exactly.
    return ts.dt.floor("us").astype("datetime64[us, UTC]")


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


def _check_feature(spec: FeatureSpec, raw: pd.Series, problems: _Problems) -> pd.Series:
    """The feature parsed to its working dtype (float64, bool/None or str/None); problems recorded."""
    import numpy as np

    col = f"column '{spec.name}': "
    null = raw.isna().to_numpy()
    if not spec.nullable:
        problems.add(null, "null_value", f"column '{spec.name}' is empty; the feature is not nullable")
    if spec.type in ("float", "int"):
        num = _parse_numbers(raw)
        vals = num.to_numpy()
        with np.errstate(invalid="ignore"):
            bad_type = ~null & ~np.isfinite(vals)
            if spec.type == "int":
                bad_type |= ~null & np.isfinite(vals) & (np.floor(vals) != vals)
            problems.add(bad_type, "wrong_type", col, raw, " is not " + ("an int" if spec.type == "int" else "a number"))
            ok = ~null & ~bad_type
            if spec.min is not None:
                problems.add(ok & (vals < spec.min), "out_of_range", col, raw, f" is below the minimum {spec.min:g}")
            if spec.max is not None:
                problems.add(ok & (vals > spec.max), "out_of_range", col, raw, f" is above the maximum {spec.max:g}")
        return num
    if spec.type == "bool":
        parsed = _parse_bools(raw)
        problems.add(~null & parsed.isna().to_numpy(), "wrong_type", col, raw,
                     " is not a bool (true/false, 1/0, yes/no)")
        return parsed
    text = _as_text(raw)
    problems.add(~null & ~text.isin(spec.categories or ()).to_numpy(), "unknown_category", col, raw,
                 f" is not one of the categories {', '.join(spec.categories or ())}")
    return text


def _whole_file(lf: LandedFile, fidx: int, code: str, reason: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    n = 0 if lf.frame is None else len(lf.frame)
    return pd.DataFrame({"_file": fidx, "_pos": np.arange(n), "row_number": lf.row_numbers[:n],
                         "reason_code": code, "reason": reason, "raw": None})


def _malformed(lf: LandedFile, fidx: int) -> pd.DataFrame | None:
    import pandas as pd

    if not lf.malformed:
        return None
    return pd.DataFrame({
        "_file": fidx,
        "_pos": -1,
        "row_number": [m[0] for m in lf.malformed],
        "reason_code": "malformed_row",
        "reason": [f"row has {m[2]} field(s), the header has {len(lf.header)}; fix the row's quoting or delimiters"
                   for m in lf.malformed],
        "raw": [json.dumps(m[1]) for m in lf.malformed],
    })


def _file_problem(model: ModelConfig, lf: LandedFile) -> tuple[str, str] | None:
    """A problem with the file's columns that sends all its rows to quarantine: ``(code, reason)``."""
    cols = lf.header
    required = [model.request_id, model.timestamp, model.label.name]
    present = [f for f in model.feature_names if f in cols]
    absent = [f for f in model.feature_names if f not in cols]
    known = {*required, model.entity_id, *model.feature_names}
    where = f"outcome file {lf.uri}"
    expected = f"expected columns: {_expected_columns(model)}"
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        return "duplicate_column", f"{where}: column '{dupes[0]}' appears more than once in the header; {expected}"
    missing = [c for c in required if c not in cols]
    if missing:
        return "missing_column", f"{where}: column '{missing[0]}' is missing; {expected}"
    if present and absent:
        return "partial_features", (
            f"{where}: feature column(s) {', '.join(map(repr, absent))} missing while "
            f"{', '.join(map(repr, present))} are present; a file carries all the features or none; {expected}"
        )
    extra = [c for c in cols if c not in known]
    if extra and model.ingestion.extra_columns == "quarantine":
        return "extra_column", (
            f"{where}: column '{extra[0]}' is not in the contract of model '{model.name}'; add it to the model's "
            f"features in {model.source or 'its config'} or drop it upstream (or set ingestion.extra_columns: "
            f"ignore); {expected}"
        )
    if extra:
        log.warning("%s: ignoring column(s) %s outside the contract of model '%s' (ingestion.extra_columns: ignore)",
                    where, ", ".join(map(repr, extra)), model.name)
    return None


def _check_file(model: ModelConfig, lf: LandedFile, fidx: int) -> tuple[pd.DataFrame | None, list[pd.DataFrame]]:
    """Validate one file: ``(good rows typed, [bad row frames])``."""
    import numpy as np
    import pandas as pd

    bad = [b for b in [_malformed(lf, fidx)] if b is not None]
    frame = lf.frame
    if frame is None or len(frame) == 0:
        return None, bad
    problem = _file_problem(model, lf)
    if problem is not None:
        return None, [*bad, _whole_file(lf, fidx, *problem)]

    problems = _Problems()
    rid = frame[model.request_id]
    problems.add(rid.isna().to_numpy(), "null_request_id",
                 f"column '{model.request_id}' is empty; every outcome needs the request id of its prediction")
    ts_raw = frame[model.timestamp]
    ts = _parse_timestamps(ts_raw)
    ts_null = ts_raw.isna().to_numpy()
    problems.add(ts_null, "bad_timestamp", f"column '{model.timestamp}' is empty; every outcome needs its time")
    problems.add(~ts_null & ts.isna().to_numpy(), "bad_timestamp", f"column '{model.timestamp}': ", ts_raw,
                 " is not an ISO-8601 time (e.g. 2026-11-02T10:15:00Z)")
    lab_raw = frame[model.label.name]
    lab = _parse_numbers(lab_raw)
    lab_null = lab_raw.isna().to_numpy()
    classes = ", ".join(map(str, model.label.classes))
    problems.add(lab_null, "null_label", f"column '{model.label.name}' is empty; the label is one of {classes}")
    problems.add(~lab_null & ~lab.isin(model.label.classes).to_numpy(), "invalid_label",
                 f"column '{model.label.name}': ", lab_raw, f" is not one of the classes {classes}")
    present = [f for f in model.feature_names if f in frame.columns]
    parsed = {f: _check_feature(model.feature(f), frame[f], problems) for f in present}

    merged = problems.merged()
    bad_pos = merged["_pos"].to_numpy(dtype="int64")
    if len(merged):
        bad.append(pd.DataFrame({"_file": fidx, "_pos": bad_pos, "row_number": lf.row_numbers[bad_pos],
                                 "reason_code": merged["reason_code"].to_numpy(),
                                 "reason": merged["reason"].to_numpy(), "raw": None}))
    keep = np.ones(len(frame), dtype=bool)
    keep[bad_pos] = False
    pick = np.flatnonzero(keep)
    good = pd.DataFrame({
        "request_id": _as_text(rid.iloc[pick]).reset_index(drop=True),
        "outcome_ts": ts.iloc[pick].reset_index(drop=True),
        "label": lab.iloc[pick].astype("int64").reset_index(drop=True),
    })
    # Absent optional columns (entity id, features) stay absent: validate_day fills them once for the whole day,
    # which is much cheaper than concatenating columns of None.
    if model.entity_id in frame.columns:
        good["entity_id"] = _as_text(frame[model.entity_id].iloc[pick]).reset_index(drop=True)
    good["has_features"] = bool(present)
    for name, values in parsed.items():
        good[name] = values.iloc[pick].reset_index(drop=True)
    good["_file"] = fidx
    good["_pos"] = pick
    good["row_number"] = lf.row_numbers[pick]
    return good, bad


def validate_day(model: ModelConfig, day: dt.date, files: Sequence[LandedFile]) -> DayValidation:
    """Validate a day's landed files (in name order): typed good rows; the first occurrence of a request id wins."""
    import numpy as np
    import pandas as pd

    goods, bads = [], []
    for fidx, lf in enumerate(files):
        good, bad = _check_file(model, lf, fidx)
        if good is not None and len(good):
            goods.append(good)
        bads.extend(bad)
    good = pd.concat(goods, ignore_index=True) if goods else _empty_good(model)
    for name, kind in [("entity_id", "category"), *((f.name, f.type) for f in model.features)]:
        if name not in good.columns:
            good[name] = np.nan if kind in ("int", "float") else None
    dup = good["request_id"].duplicated(keep="first").to_numpy()
    if dup.any():
        first = good.loc[~dup, ["request_id", "_file", "row_number"]].set_index("request_id")
        dups = good[dup]
        where = first.loc[dups["request_id"]]
        names = [files[i].uri.rsplit("/", 1)[-1] for i in where["_file"]]
        bads.append(pd.DataFrame({
            "_file": dups["_file"].to_numpy(),
            "_pos": dups["_pos"].to_numpy(),
            "row_number": dups["row_number"].to_numpy(),
            "reason_code": "duplicate_request_id",
            "reason": [f"request id {r!r} already landed from {n} row {k}; the first occurrence wins"
                       for r, n, k in zip(dups["request_id"], names, where["row_number"])],
            "raw": None,
        }))
        good = good[~dup].reset_index(drop=True)
    bad = pd.concat(bads, ignore_index=True) if bads else _empty_bad()
    return DayValidation(day, list(files), good, bad)


def _empty_good(model: ModelConfig) -> pd.DataFrame:
    import pandas as pd

    cols: dict[str, Any] = {
        "request_id": pd.Series(dtype=object),
        "outcome_ts": pd.Series(dtype="datetime64[us, UTC]"),
        "label": pd.Series(dtype="int64"),
        "entity_id": pd.Series(dtype=object),
        "has_features": pd.Series(dtype=bool),
    }
    for f in model.features:
        cols[f.name] = pd.Series(dtype="float64" if f.type in ("int", "float") else object)
    for c in ("_file", "_pos", "row_number"):
        cols[c] = pd.Series(dtype="int64")
    return pd.DataFrame(cols)


def _empty_bad() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"_file": pd.Series(dtype="int64"), "_pos": pd.Series(dtype="int64"),
                         "row_number": pd.Series(dtype="int64"), "reason_code": pd.Series(dtype=object),
                         "reason": pd.Series(dtype=object), "raw": pd.Series(dtype=object)})


# --- joining with logged predictions (pure) --------------------------------------------------------------------


def labelled_schema(model: ModelConfig) -> pa.Schema:
    """The fixed schema of a labelled partition (the same for an empty day)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    kinds = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "category": pa.string()}
    return pa.schema([
        ("request_id", pa.string()), ("entity_id", pa.string()), ("ts", ts), ("outcome_ts", ts),
        ("label", pa.int64()), ("model_version", pa.string()), ("arm", pa.string()), ("source", pa.string()),
        *[(f.name, kinds[f.type]) for f in model.features],
    ])


def quarantine_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("source_file", pa.string()), ("row_number", pa.int64()), ("reason_code", pa.string()),
                      ("reason", pa.string()), ("raw", pa.string())])


def _working(spec: FeatureSpec, s: pd.Series) -> np.ndarray:
    """A feature column in the working dtype validation produces: float64 (int too), or objects with None."""
    import pandas as pd

    if spec.type in ("float", "int"):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")
    return _objects(s)


def _objects(s: pd.Series) -> np.ndarray:
    """An object array with None for nulls (what pyarrow writes as null strings/bools)."""
    import numpy as np

    out = s.to_numpy(dtype=object)
    null = s.isna().to_numpy()
    if null.any():
        out = out.copy()
        out[null] = None
    return np.asarray(out, dtype=object)


def _interned(s: pd.Series) -> np.ndarray:
    """Like :func:`_objects`, with one string object per distinct value (versions, arms and categories repeat a
    few values a million times; the store hands back a fresh string for each row)."""
    import numpy as np

    cat = s.astype("category")
    values = np.asarray(cat.cat.categories, dtype=object)
    codes = cat.cat.codes.to_numpy()
    out = values[codes] if len(values) else np.full(len(s), None, dtype=object)
    out[codes < 0] = None
    return out


def _micros(s: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    import pandas as pd

    naive = pd.to_datetime(s, utc=True).dt.tz_convert(None)  # numpy holds no zone: UTC wall time is the value
    return naive.astype("datetime64[us]").to_numpy().view("int64")


def _utc(micros: np.ndarray) -> pd.Series:
    import pandas as pd

    return pd.Series(micros.astype("int64").view("datetime64[us]")).dt.tz_localize("UTC")


def join_predictions(
    model: ModelConfig, validation: DayValidation, predictions: pd.DataFrame | Iterable[pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(labelled, unmatched)`` for a validated day and the logged predictions of its outcome-only request ids.

    Outcome-only rows take their features, entity, prediction time, version and arm from the logged prediction
    (``source='logged'``); rows whose file carried features keep them (``source='file'``, ``ts`` = outcome time).
    Outcome-only rows without a logged prediction come back as ``unmatched`` bad rows. ``predictions`` may be one
    frame or an iterable of chunks, so a day of a million outcomes never holds all its predictions at once.
    """
    import numpy as np
    import pandas as pd

    good = validation.good
    n = len(good)
    from_file = good["has_features"].to_numpy(dtype=bool)
    outcome_only = np.flatnonzero(~from_file)
    lookup = pd.Index(good["request_id"].to_numpy(dtype=object)[outcome_only])
    found = np.zeros(n, dtype=bool)
    outcome_us = _micros(good["outcome_ts"])
    ts = outcome_us.copy()
    entity = _objects(good["entity_id"]).copy()
    version = np.full(n, None, dtype=object)
    arm = np.full(n, None, dtype=object)
    feats = {f.name: _working(f, good[f.name]).copy() for f in model.features}
    chunks = [predictions] if isinstance(predictions, pd.DataFrame) else predictions
    for chunk in chunks:
        if not len(chunk) or not len(lookup):
            continue
        at = lookup.get_indexer(chunk["request_id"].to_numpy(dtype=object))
        src = np.flatnonzero(at >= 0)
        dst = outcome_only[at[src]]
        first = ~found[dst]  # the store keys predictions by request id; keep the first if a backend repeats one
        src, dst = src[first], dst[first]
        if not len(src):
            continue
        found[dst] = True
        ts[dst] = _micros(chunk["ts"])[src]
        entity[dst] = _objects(chunk["entity_id"])[src]
        version[dst] = _interned(chunk["model_version"])[src]
        arm[dst] = _interned(chunk["arm"])[src]
        for spec in model.features:
            if spec.name not in chunk.columns:  # a feature the serving app did not log: unknown, not invented
                feats[spec.name][dst] = np.nan if spec.type in ("int", "float") else None
            elif spec.type == "category":
                feats[spec.name][dst] = _interned(chunk[spec.name])[src]
            else:
                feats[spec.name][dst] = _working(spec, chunk[spec.name])[src]
    matched = from_file | found
    lost = good[~matched]
    unmatched = pd.DataFrame({
        "_file": lost["_file"].to_numpy(dtype="int64"),
        "_pos": lost["_pos"].to_numpy(dtype="int64"),
        "row_number": lost["row_number"].to_numpy(dtype="int64"),
        "reason_code": "unmatched",
        "reason": [f"no logged prediction for request id {r!r} of model '{model.name}' in the store; log the "
                   "prediction first or land the outcome with its feature columns" for r in lost["request_id"]],
        "raw": None,
    })
    keep = np.flatnonzero(matched)
    labelled = pd.DataFrame({
        "request_id": good["request_id"].to_numpy(dtype=object)[keep],
        "entity_id": entity[keep],
        "ts": _utc(ts[keep]),
        "outcome_ts": _utc(outcome_us[keep]),
        "label": good["label"].to_numpy(dtype="int64")[keep],
        "model_version": version[keep],
        "arm": arm[keep],
        "source": np.where(from_file[keep], "file", "logged").astype(object),
        **{name: values[keep] for name, values in feats.items()},
    })
    return labelled, unmatched


def newer_outcomes(incoming: pd.DataFrame, existing: pd.DataFrame) -> pd.DataFrame:
    """The incoming outcomes that should replace what the store holds: (outcome ts, label) strictly greater.

    Keeping the maximum makes the store independent of the order days are (re)ingested in: a backfill of an
    old day cannot overwrite a correction that landed later, and an identical re-run writes nothing.
    """
    import pandas as pd

    if existing.empty:
        return incoming
    old = existing[["request_id", "ts", "label"]].rename(columns={"ts": "_old_ts", "label": "_old_label"})
    merged = incoming[["request_id", "ts", "label"]].merge(old, on="request_id", how="left")
    old_ts = pd.to_datetime(merged["_old_ts"], utc=True)
    keep = (
        old_ts.isna()
        | (merged["ts"] > old_ts)
        | ((merged["ts"] == old_ts) & (merged["label"].astype("float64") > merged["_old_label"].astype("float64")))
    )
    return incoming[keep.to_numpy()]


def quarantine_frame(validation: DayValidation, unmatched: pd.DataFrame) -> pd.DataFrame:
    """The day's bad rows: source file, 1-based row number, reason code, reason and the original row as JSON."""
    import pandas as pd

    bad = pd.concat([validation.bad, unmatched], ignore_index=True) if len(unmatched) else validation.bad
    bad = bad.sort_values(["_file", "row_number"], kind="stable").reset_index(drop=True)
    raw = bad["raw"].to_numpy(dtype=object).copy()
    from_frame = bad["_pos"].to_numpy() >= 0
    for fidx in sorted(set(bad.loc[from_frame, "_file"].tolist())):
        at = (bad["_file"].to_numpy() == fidx) & from_frame
        frame = validation.files[int(fidx)].frame
        lines = frame.iloc[bad.loc[at, "_pos"].to_numpy()].to_json(
            orient="records", lines=True, date_format="iso", date_unit="us", default_handler=str
        )
        raw[at] = lines.splitlines()
    return pd.DataFrame({
        "source_file": [validation.files[int(i)].uri for i in bad["_file"]],
        "row_number": bad["row_number"].astype("int64").to_numpy(),
        "reason_code": bad["reason_code"].to_numpy(dtype=object),
        "reason": bad["reason"].to_numpy(dtype=object),
        "raw": raw,
    })


# --- the run ----------------------------------------------------------------------------------------------------


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def _by_ids(read: Any, model: str, ids: Sequence[str]) -> Iterator[tuple[Sequence[str], pd.DataFrame]]:
    """``(ids, frame)`` per chunk of a store read by request id: memory stays bounded at any day size."""
    for i in range(0, len(ids), _READ_CHUNK):
        chunk = ids[i : i + _READ_CHUNK]
        yield chunk, read(model, request_ids=chunk)


def _checkpoint(stage: str) -> None:
    """Test hook: pause at ``stage`` when ``EVERGREEN_INGEST_PAUSE_AT`` asks, so a test can SIGKILL us there."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec or spec.split(":", 1)[0] != stage:
        return
    marker = spec.split(":", 1)[1] if ":" in spec else ""
    log.warning("%s=%s: pausing at stage '%s' (pid %s)", PAUSE_ENV, spec, stage, os.getpid())
    if marker:
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
    time.sleep(3600)


def ingest_interval(
    model: ModelConfig,
    start: dt.date,
    end: dt.date,
    store: Store,
    *,
    landing_root: str | None = None,
    lake_root: str | None = None,
) -> list[DayResult]:
    """Ingest the outcome files landed for days ``start <= day < end``; one :class:`DayResult` per day."""
    days = _days(start, end)
    t0 = time.perf_counter()
    # Read and validate every day first: an unreadable file must fail the run before any write.
    validations = []
    for day in days:
        files = [read_landed_file(uri) for uri in landed_uris(model, day, landing_root)]
        validations.append(validate_day(model, day, files))
    log.info("%s: read and validated %d day(s) in %.1fs", model.name, len(days), time.perf_counter() - t0)
    _checkpoint("read")
    return [_write_day(model, v, store, lake_root) for v in validations]


def _write_day(model: ModelConfig, validation: DayValidation, store: Store, lake_root: str | None) -> DayResult:
    """Store and lake writes of one validated day, in an order a crash at any point can be retried from."""
    import pandas as pd

    t0 = time.perf_counter()
    day = validation.day
    good = validation.good
    logged_ids = good.loc[~good["has_features"].to_numpy(dtype=bool), "request_id"].tolist()
    chunks = (frame for _, frame in _by_ids(store.read_predictions, model.name, logged_ids))
    labelled, unmatched = join_predictions(model, validation, chunks)
    quarantine = quarantine_frame(validation, unmatched)
    t1 = time.perf_counter()
    outcomes = pd.DataFrame({"request_id": labelled["request_id"], "ts": labelled["outcome_ts"],
                             "label": labelled["label"]})
    written = 0
    for i, (_, existing) in enumerate(_by_ids(store.read_outcomes, model.name, outcomes["request_id"].tolist())):
        to_write = newer_outcomes(outcomes.iloc[i * _READ_CHUNK : (i + 1) * _READ_CHUNK], existing)
        if len(to_write):
            written += store.upsert_outcomes(model.name, to_write)
    if written < len(outcomes):
        log.info("%s %s: %d of %d outcome(s) already in the store with the same or a later outcome time; kept",
                 model.name, day, len(outcomes) - written, len(outcomes))
    t2 = time.perf_counter()
    _checkpoint("store")
    labelled_uri = lake.labelled_path(model.name, day, lake_root)
    quarantine_uri = lake.quarantine_path(model.name, day, lake_root)
    lake.write_parquet_atomic(labelled, labelled_uri, schema=labelled_schema(model))
    _checkpoint("labelled")
    lake.write_parquet_atomic(quarantine, quarantine_uri, schema=quarantine_schema())
    _checkpoint("quarantine")
    result = DayResult(
        model=model.name,
        day=day.isoformat(),
        rows_read=sum(f.rows for f in validation.files),
        landed=len(labelled),
        quarantined=len(quarantine),
        unmatched=len(unmatched),
        reasons=dict(sorted(Counter(quarantine["reason_code"]).items())),
        files=[f.uri for f in validation.files],
        empty_files=[f.uri for f in validation.files if f.empty],
        labelled_uri=labelled_uri,
        quarantine_uri=quarantine_uri,
    )
    store.put_record(Record(RECORD_KIND, f"{model.name}/{day.isoformat()}", model.name,
                            dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc), result.payload()))
    _log_result(result, quarantine)
    log.debug("%s %s: predictions read and joined in %.1fs, outcomes compared and upserted in %.1fs, lake and "
              "record written in %.1fs", model.name, day, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return result


def _log_result(result: DayResult, quarantine: pd.DataFrame) -> None:
    if not result.files:
        log.info("%s %s: no outcome files landed; wrote empty partitions", result.model, result.day)
    log.info("%s", result.summary())
    if result.empty_files:
        log.info("%s %s: empty file(s): %s", result.model, result.day, ", ".join(result.empty_files))
    if len(quarantine):
        # One line per reason code with its first example, so the log says why without listing every row.
        firsts = quarantine.drop_duplicates("reason_code")
        for row in firsts.itertuples(index=False):
            log.warning("%s %s: %d row(s) quarantined as %s, e.g. %s row %d: %s", result.model, result.day,
                        result.reasons[row.reason_code], row.reason_code, row.source_file.rsplit("/", 1)[-1],
                        row.row_number, row.reason)
        log.warning("%s %s: quarantined rows are kept with their reasons in %s", result.model, result.day,
                    result.quarantine_uri)


def run_for_context(model_name: str, context: Any) -> dict[str, Any]:
    """The ``ingest`` task of ``ingest_feedback_<model>``: ingest the run's data interval, return a small summary.

    The store comes from the ``evergreen_store`` Connection (embedded SQLite without one); landing zone and lake
    from ``EVERGREEN_LANDING_URI`` / ``EVERGREEN_LAKE_URI`` (embedded folders without them).
    """
    from evergreen.config import get_config
    from evergreen.context import interval_days, is_backfill
    from evergreen.hooks.store import StoreHook

    model = get_config().model(model_name)
    start, end = interval_days(context)
    results = ingest_interval(model, start, end, StoreHook().get_conn())
    return {
        "model": model_name,
        "interval": [start.isoformat(), end.isoformat()],
        "backfill": is_backfill(context),
        "days": {
            r.day: {"rows_read": r.rows_read, "landed": r.landed, "quarantined": r.quarantined,
                    "unmatched": r.unmatched, "labelled_uri": r.labelled_uri, "quarantine_uri": r.quarantine_uri}
            for r in results
        },
    }


# --- state digest (tests, demo) -----------------------------------------------------------------------------------


def frame_digest(df: pd.DataFrame) -> dict[str, Any]:
    """Rows and a SHA-256 of a frame's content, independent of row order (columns and dtypes included)."""
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        lines = df.to_json(orient="records", lines=True, date_format="iso", date_unit="us", double_precision=15,
                           default_handler=str).splitlines()
        for line in sorted(lines):
            h.update(line.encode())
            h.update(b"\n")
    return {"rows": int(len(df)), "sha256": h.hexdigest()}


def state_digest(
    store: Store, model: str, days: Iterable[dt.date], lake_root: str | None = None
) -> dict[str, dict[str, Any]]:
    """A canonical fingerprint of everything ingestion owns: the model's outcomes, predictions and ingestion records
    in the store, and the visible files of each day's labelled and quarantine partitions in the lake."""
    out: dict[str, dict[str, Any]] = {
        "store/outcomes": frame_digest(store.read_outcomes(model)),
        "store/predictions": frame_digest(store.read_predictions(model)),
    }
    recs = [[r.key, r.ts.isoformat(), r.payload] for r in store.list_records(RECORD_KIND, model)]
    out[f"store/records/{RECORD_KIND}"] = {
        "rows": len(recs), "sha256": hashlib.sha256(json.dumps(recs, sort_keys=True, default=str).encode()).hexdigest()
    }
    for day in days:
        for dataset in ("labelled", "quarantine"):
            directory = lake.partition_dir(model, dataset, day, lake_root)
            fs, path = lake.filesystem(directory)
            names = sorted(p for p in (fs.ls(path, detail=False) if fs.exists(path) else [])
                           if not p.rsplit("/", 1)[-1].startswith((".", "_")))
            for name in names:
                with fs.open(name, "rb") as fh:
                    import pyarrow.parquet as pq

                    table = pq.read_table(fh)
                entry = frame_digest(table.to_pandas())
                entry["schema"] = str(table.schema.remove_metadata())
                out[f"lake/{dataset}/dt={lake.day_str(day)}/{name.rsplit('/', 1)[-1]}"] = entry
    return out


# --- command line ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evergreen.ingest --model churn --start 2026-11-02 [--end 2026-11-03] [--store-uri URI]``.

    The same entry point the DAG task calls, for scripts, benchmarks and crash tests. Prints the day results as JSON.
    """
    from evergreen.config import get_config
    from evergreen.paths import home
    from evergreen.store.base import open_store

    parser = argparse.ArgumentParser(prog="python -m evergreen.ingest", description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="day after the last (default: start + 1 day)")
    parser.add_argument("--store-uri", default=None, help="store URI (default: the embedded SQLite store)")
    parser.add_argument("--landing-root", default=None)
    parser.add_argument("--lake-root", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = get_config().model(args.model)
    end = args.end or args.start + dt.timedelta(days=1)
    with open_store(args.store_uri or home().store_uri) as store:
        try:
            results = ingest_interval(model, args.start, end, store, landing_root=args.landing_root,
                                      lake_root=args.lake_root)
        except IngestionError as exc:
            log.error("%s", exc)
            return 2
    json.dump([asdict(r) for r in results], sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
