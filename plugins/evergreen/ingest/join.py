"""Joining validated outcomes with the predictions the serving app logged, and the day's quarantine frame.

An outcome-only row becomes a labelled example only through its logged prediction (features, entity, version,
arm); without one it is quarantined as ``unmatched``. Every labelled example keeps its landing key, so the store
and every reader of the lake can apply the correction rule (:mod:`evergreen.corrections`) across days. Pure: the
caller reads the store and passes frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from evergreen.corrections import LANDING_KEY

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import FeatureSpec, ModelConfig
    from evergreen.ingest.contract import DayValidation


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
        LANDING_KEY: good[LANDING_KEY].to_numpy(dtype=object)[keep],
        **{name: values[keep] for name, values in feats.items()},
    })
    return labelled, unmatched


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

