"""Validation of a day's landed rows against the model's contract, and the fixed schemas of what it writes.

The contract is :class:`evergreen.config.ModelConfig` (required columns, feature types, ranges, categories,
nullability, label classes). Every check is vectorised per column and every failure carries a reason code from
:data:`REASON_CODES` and a message that names the file, the column and the value, so the quarantine explains
itself. Pure: frames in, frames out; the store is not read here (matching with logged predictions is
:mod:`evergreen.ingest.join`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evergreen.ingest.values import (
    _as_text,
    _iso,
    _parse_bools,
    _parse_numbers,
    _parse_text_timestamps_fast,
    _parse_timestamps,
    day_end,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from evergreen.config import FeatureSpec, ModelConfig
    from evergreen.ingest.read import LandedFile

log = logging.getLogger(__name__)

#: reason codes of quarantined rows and what they mean (the README lists the same)
REASON_CODES: dict[str, str] = {
    "missing_column": "a required column (request id, timestamp, label) is missing from the file",
    "partial_features": "the file carries some feature columns but not all of them",
    "extra_column": "the file has a column outside the model's contract (extra_columns: quarantine)",
    "duplicate_column": "a column name appears twice in the file's header",
    "malformed_row": "the CSV row has a different number of fields than the header",
    "null_request_id": "the request id is empty",
    "bad_timestamp": "the outcome timestamp is empty or not an ISO-8601 time",
    "future_timestamp": "the outcome time is at or after the end of its landing day (the dt= folder, midnight UTC)",
    "null_label": "the label is empty",
    "invalid_label": "the label is not one of the model's classes",
    "wrong_type": "a feature value cannot be parsed as the feature's declared type",
    "out_of_range": "a numeric feature is below its min or above its max",
    "unknown_category": "a category feature has a value outside its declared categories",
    "null_value": "a non-nullable feature is empty",
    "duplicate_request_id": "the same outcome (identical in every field) for the request id landed again later that "
                            "day; the later copy is kept",
    "superseded": "a later outcome for the request id landed that day (a later outcome time, or the same time in a "
                  "later file or row) and replaced this one by the correction rule; the reason names it",
    "unmatched": "no logged prediction for the request id and the file carries no features",
    "before_prediction": "the outcome time is earlier than the logged prediction's time for the request id",
    "unreadable_file": "the file cannot be read at all (not UTF-8, corrupt gzip or Parquet, no header); it is kept "
                       "whole, bytes unchanged, under quarantine/dt=.../files/ (one row, row_number 0)",
}



@dataclass
class DayValidation:
    """A day's rows split into ``good`` (typed, one per request id) and ``bad`` (with reasons), before the store is
    read.

    ``good``: request_id, outcome_ts, label, entity_id, has_features, <features>, _file, _pos, row_number,
    landing_key (:func:`evergreen.corrections.landing_key` of the day, the file name and the row number).
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

    def add(self, mask: np.ndarray, code: str, reason: str, values: pd.Series | None = None, after: str = "",
            describe: Callable[[np.ndarray], list[str]] | None = None) -> None:
        """Record ``code`` for the rows in ``mask``: the reason is ``reason`` (+ the row's value + ``after``), or
        ``describe(positions)`` when one value is not enough to explain the problem."""
        import numpy as np
        import pandas as pd

        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        # Python only formats the failing rows' messages; the checks themselves are vectorised.
        msgs: Any
        if describe is not None:
            msgs = describe(idx)
        elif values is None:
            msgs = reason
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


def _unreadable(lf: LandedFile, fidx: int) -> pd.DataFrame:
    """The one quarantine row of a file that cannot be read at all (row_number 0: the whole file)."""
    import pandas as pd

    kept = f"kept whole, bytes unchanged, at {lf.kept_at}" if lf.kept_at else "kept in the landing zone"
    reason = (f"outcome file {lf.uri} {lf.error}; none of its rows landed, the file is {kept}; fix or re-export it "
              "(CSV: UTF-8 text with a header line, optionally .gz/.bz2/.zst; or Parquet), land it again under the "
              "same dt= folder and re-run the day")
    raw = json.dumps({"kept_at": lf.kept_at, "bytes": lf.size, "sha256": lf.sha256})
    return pd.DataFrame({"_file": [fidx], "_pos": [-1], "row_number": [0], "reason_code": ["unreadable_file"],
                         "reason": [reason], "raw": [raw]})


def _check_file(
    model: ModelConfig, lf: LandedFile, fidx: int, day: dt.date
) -> tuple[pd.DataFrame | None, list[pd.DataFrame]]:
    """Validate one file of landing day ``day``: ``(good rows typed, [bad row frames])``."""
    import numpy as np
    import pandas as pd

    if lf.unreadable:
        return None, [_unreadable(lf, fidx)]
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
    end = day_end(day)
    problems.add(
        (ts >= end).to_numpy(dtype=bool), "future_timestamp", "",
        describe=lambda idx: [
            f"column '{model.timestamp}': {_show(v)} ({_iso(t)}) is at or after the end of its landing day {day} "
            f"({_iso(end)}); an outcome cannot be later than the day it lands: fix the time upstream, or land the "
            "file under the dt= folder of the day it belongs to"
            for v, t in zip(ts_raw.iloc[idx].tolist(), ts.iloc[idx].tolist())
        ],
    )
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
    """Validate a day's landed files (in name order): typed good rows, one per request id by the correction rule."""
    import numpy as np
    import pandas as pd

    from evergreen.corrections import LANDING_KEY, landing_keys

    goods, bads = [], []
    for fidx, lf in enumerate(files):
        good, bad = _check_file(model, lf, fidx, day)
        if good is not None and len(good):
            goods.append(good)
        bads.extend(bad)
    good = pd.concat(goods, ignore_index=True) if goods else _empty_good(model)
    for name, kind in [("entity_id", "category"), *((f.name, f.type) for f in model.features)]:
        if name not in good.columns:
            good[name] = np.nan if kind in ("int", "float") else None
    names = [lf.uri.rstrip("/").rsplit("/", 1)[-1] for lf in files]
    file_idx = good["_file"].to_numpy(dtype="int64")
    good[LANDING_KEY] = landing_keys(day, [names[i] for i in file_idx], good["row_number"].to_numpy(dtype="int64"))
    good, replaced = _one_per_request(good, names)
    if replaced is not None:
        bads.append(replaced)
    bad = pd.concat(bads, ignore_index=True) if bads else _empty_bad()
    return DayValidation(day, list(files), good, bad)


def _one_per_request(good: pd.DataFrame, names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Keep the row of each request id that wins by the correction rule (:func:`evergreen.corrections.
    winner_positions`: the latest outcome time, then the later file by name, then the later row). Every other row
    goes to quarantine: ``duplicate_request_id`` when identical to the winner in every field (a repeat), else
    ``superseded`` (a replaced outcome), each naming the winner's file and row."""
    import numpy as np
    import pandas as pd

    from evergreen.corrections import LANDING_KEY, winner_positions

    win = winner_positions(good["request_id"], good["outcome_ts"], good[LANDING_KEY])
    losers = np.flatnonzero(win != np.arange(len(good)))
    if not len(losers):
        return good, None
    winners = win[losers]
    content = [c for c in good.columns if c not in ("_file", "_pos", "row_number", LANDING_KEY)]
    same = np.ones(len(losers), dtype=bool)
    for col in content:
        values = good[col]
        a, b = values.iloc[losers], values.iloc[winners]
        equal = (a.to_numpy() == b.to_numpy()) | (a.isna().to_numpy() & b.isna().to_numpy())
        same &= np.asarray(equal, dtype=bool)
    ids = good["request_id"].to_numpy(dtype=object)
    ts = good["outcome_ts"]
    files = good["_file"].to_numpy(dtype="int64")
    rows = good["row_number"].to_numpy(dtype="int64")

    def reason(loser: int, winner: int, identical: bool) -> str:
        where = f"{names[files[winner]]} row {rows[winner]}"
        if identical:
            return (f"request id {ids[loser]!r}: the same outcome (identical in every field) landed again at {where}, "
                    "which is kept; a repeat is not a correction")
        later = ts.iloc[winner] > ts.iloc[loser]
        why = (f"a later outcome time, {_iso(ts.iloc[winner])}" if later else
               f"the same outcome time, {_iso(ts.iloc[winner])}, landed later")
        return (f"request id {ids[loser]!r}: replaced by the outcome at {where} ({why}); the latest outcome time "
                "wins, then the later file or row, never the label")

    bad = pd.DataFrame({
        "_file": files[losers],
        "_pos": good["_pos"].to_numpy(dtype="int64")[losers],
        "row_number": rows[losers],
        "reason_code": np.where(same, "duplicate_request_id", "superseded").astype(object),
        "reason": [reason(int(lo), int(w), bool(d)) for lo, w, d in zip(losers, winners, same)],
        "raw": None,
    })
    keep = np.ones(len(good), dtype=bool)
    keep[losers] = False
    return good[keep].reset_index(drop=True), bad


def check_prediction_times(validation: DayValidation, labelled: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(labelled kept, bad rows)``: a labelled example joined with its logged prediction (``source='logged'``)
    whose outcome time is earlier than the prediction's is quarantined as ``before_prediction``.

    Only joined rows can be checked (a file's own features carry no prediction time). The bad rows have the
    columns of :attr:`DayValidation.bad`, found through the request id (unique among a day's good rows).
    """
    import pandas as pd

    early = ((labelled["source"].to_numpy(dtype=object) == "logged")
             & (labelled["outcome_ts"] < labelled["ts"]).to_numpy(dtype=bool))
    if not early.any():
        return labelled, _empty_bad()
    good = validation.good
    rows = labelled[early]
    at = pd.Index(good["request_id"].to_numpy(dtype=object)).get_indexer(rows["request_id"].to_numpy(dtype=object))
    bad = pd.DataFrame({
        "_file": good["_file"].to_numpy(dtype="int64")[at],
        "_pos": good["_pos"].to_numpy(dtype="int64")[at],
        "row_number": good["row_number"].to_numpy(dtype="int64")[at],
        "reason_code": "before_prediction",
        "reason": [f"outcome time {_iso(o)} is earlier than the time {_iso(p)} of the logged prediction for request "
                   f"id {r!r}; an outcome cannot precede the prediction it labels: fix the outcome time upstream (or "
                   "the request id)" for r, o, p in zip(rows["request_id"], rows["outcome_ts"], rows["ts"])],
        "raw": None,
    })
    return labelled[~early].reset_index(drop=True), bad


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
    cols["landing_key"] = pd.Series(dtype=object)
    return pd.DataFrame(cols)


def _empty_bad() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"_file": pd.Series(dtype="int64"), "_pos": pd.Series(dtype="int64"),
                         "row_number": pd.Series(dtype="int64"), "reason_code": pd.Series(dtype=object),
                         "reason": pd.Series(dtype=object), "raw": pd.Series(dtype=object)})



def labelled_schema(model: ModelConfig) -> pa.Schema:
    """The fixed schema of a labelled partition (the same for an empty day)."""
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    kinds = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "category": pa.string()}
    return pa.schema([
        ("request_id", pa.string()), ("entity_id", pa.string()), ("ts", ts), ("outcome_ts", ts),
        ("label", pa.int64()), ("model_version", pa.string()), ("arm", pa.string()), ("source", pa.string()),
        ("landing_key", pa.string()),  # evergreen.corrections.LANDING_KEY: readers apply the rule with it
        *[(f.name, kinds[f.type]) for f in model.features],
    ])


def quarantine_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("source_file", pa.string()), ("row_number", pa.int64()), ("reason_code", pa.string()),
                      ("reason", pa.string()), ("raw", pa.string())])

