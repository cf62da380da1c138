"""The data a training sees: its window of lake days, the rows in it, the train/holdout split and its fingerprint.

Bad input fails here, before any fitting, with the window or partition named and what to do about it. The split
is a hash of the request id, not a random draw: a request lands on the same side in every retrain, so champion
and challenger are compared on rows neither saw. The fingerprint of the training content ties a registered
version to exactly the rows it learnt from.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import lake, tracking
from evergreen.config import ModelConfig
from evergreen.corrections import read_labelled
from evergreen.train.spec import LABEL, TrainingError, build_estimator, resolve_hyperparameters

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

REQUEST_ID = "request_id"


class TrainingDataError(TrainingError):
    """The training window's data is unusable (empty, too small, single class, missing features)."""


@dataclass(frozen=True)
class Window:
    """A training window of lake days, ``start <= day < end`` (UTC dates)."""

    start: dt.date
    end: dt.date

    @classmethod
    def parse(cls, start: str | dt.date, end: str | dt.date) -> Window:
        try:
            s = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start))
            e = end if isinstance(end, dt.date) else dt.date.fromisoformat(str(end))
        except ValueError:
            raise TrainingDataError(
                f"training window '{start}/{end}': dates must be YYYY-MM-DD (start inclusive, end exclusive)"
            ) from None
        if e <= s:
            raise TrainingDataError(f"training window '{s}/{e}': end must be after start (the end day is excluded)")
        return cls(s, e)

    @property
    def tag(self) -> str:
        """The value of the version tag :data:`evergreen.tracking.TRAINING_WINDOW_TAG`."""
        return tracking.window_tag(self.start, self.end)

    def __str__(self) -> str:
        return self.tag


@dataclass(frozen=True)
class Prepared:
    window: Window
    train: pd.DataFrame  # features + label
    holdout: pd.DataFrame  # every lake column of the holdout rows
    fingerprint: str
    partitions: list[str]
    hyperparameters: dict[str, Any]


def holdout_mask(request_ids: pd.Series, fraction: float) -> np.ndarray:
    """True for the holdout rows: a fixed hash of the request id, so a row is on the same side in every retrain."""
    import pandas as pd

    buckets = pd.util.hash_pandas_object(request_ids.astype(str), index=False).to_numpy() % 1_000_000
    return buckets < round(fraction * 1_000_000)


def fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's content (column names, dtypes and every value, in order)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode())
    if len(frame):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _partition_columns(uri: str) -> list[str]:
    import pyarrow.parquet as pq

    fs, path = lake.filesystem(uri)
    with fs.open(path, "rb") as fh:
        return list(pq.read_schema(fh).names)


def load_window(model: ModelConfig, window: Window, lake_root: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The window's labelled rows, validated: every failure names the window or the partition and what to do.

    One row per request id: a request corrected on a later day of the window has a row in each day's partition,
    and the correction rule (:func:`evergreen.corrections.read_labelled`) keeps the one the store keeps.
    """
    frame, partitions = read_labelled(model.name, window.start, window.end, root=lake_root)
    pattern = lake.labelled_path(model.name, "YYYY-MM-DD", lake_root)
    if not partitions:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': no labelled partitions ({pattern} for "
            f"{window.start} <= dt < {window.end}); run ingest_feedback for those days or choose a window with data"
        )
    needed = [REQUEST_ID, LABEL, *model.feature_names]
    for uri in partitions:
        present = set(_partition_columns(uri))  # one footer read per partition (a HEAD and ranged GETs on S3)
        missing = [c for c in needed if c not in present]
        if missing:
            raise TrainingDataError(
                f"partition {uri} (training window {window}): column(s) {', '.join(missing)} missing; the model "
                f"expects {', '.join(needed)}. Re-run ingest_feedback for that day, or exclude it from the window."
            )
    rows = len(frame)
    if rows < model.training.min_rows:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': {rows} labelled rows in {len(partitions)} "
            f"partition(s), fewer than training.min_rows={model.training.min_rows}; widen the window or lower "
            f"training.min_rows in {model.source or 'the model config'}"
        )
    labels = frame[LABEL]
    bad = labels[~labels.isin(model.label.classes)]
    if len(bad):
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': {len(bad)} label value(s) outside the declared "
            f"classes {list(model.label.classes)} (e.g. {bad.iloc[0]!r}); fix the outcome data or label.classes"
        )
    present = sorted(labels.unique().tolist())
    if len(present) < 2:
        raise TrainingDataError(
            f"training window {window} of model '{model.name}': label '{model.label.name}' has a single class "
            f"({present[0]}) in all {rows} rows; a classifier needs both classes, widen the window"
        )
    return frame, partitions


def prepare(
    model: ModelConfig,
    window: Window,
    *,
    lake_root: str | None = None,
    hyperparameters: str | Mapping[str, Any] | None = None,
) -> Prepared:
    # Rejected hyper-parameters fail here, before the window is read, not after minutes of fitting.
    build_estimator(model, hyperparameters)
    frame, partitions = load_window(model, window, lake_root)
    content = frame[[REQUEST_ID, LABEL, *model.feature_names]]
    mask = holdout_mask(frame[REQUEST_ID], model.training.holdout_fraction)
    train_frame = content.loc[~mask, [*model.feature_names, LABEL]].reset_index(drop=True)
    holdout = frame.loc[mask].reset_index(drop=True)
    for name, part in (("training", train_frame), ("holdout", holdout)):
        if part[LABEL].nunique() < 2:
            raise TrainingDataError(
                f"training window {window} of model '{model.name}': the {name} split ({len(part)} rows) has a "
                "single class; widen the window or raise training.min_rows"
            )
    prepared = Prepared(
        window=window,
        train=train_frame,
        holdout=holdout,
        fingerprint=fingerprint(content),
        partitions=partitions,
        hyperparameters=resolve_hyperparameters(model, hyperparameters),
    )
    log.info(
        "prepared %s window %s: %s rows from %s partitions (%s train, %s holdout), fingerprint %s",
        model.name, window, len(frame), len(partitions), len(train_frame), len(holdout), prepared.fingerprint[:12],
    )
    return prepared


def write_holdout(holdout: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(path, index=False)
    return str(path)
