"""The data a training sees: its window of lake days, the rows in it, the train/holdout split and its fingerprint.

Bad input fails here, before any fitting, with the window or partition named and what to do about it.

The split is out of time, by lake day: a window ``[start, end)`` trains on the days ``[start, end - holdout_days)``
and holds out the last ``training.holdout_days`` days ``[end - holdout_days, end)``. A row's day is the landing day
of the outcome that wins under the correction rule (the ``dt=`` partition it came from, the day prefix of its
landing key): the same lake days the window is made of. The rule is applied over the whole window first, so a
request corrected on a holdout day is in the holdout only, with its corrected label, and never in training. No
model trains on a day at or after its own holdout start, so a later model's holdout is unseen by the earlier one
too, and the two can be scored on it side by side. The fingerprint of the window's content ties a registered
version to exactly the rows it was made from.
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
from evergreen.corrections import LANDING_KEY, read_labelled
from evergreen.train.spec import LABEL, TrainingError, build_estimator, resolve_hyperparameters

if TYPE_CHECKING:
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

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def split(self, holdout_days: int) -> tuple[Window, Window]:
        """``(training days, holdout days)``: ``[start, end - holdout_days)`` and ``[end - holdout_days, end)``.

        Fails, naming the window and ``holdout_days``, unless both halves have at least one day.
        """
        if holdout_days < 1 or holdout_days >= self.days:
            raise TrainingDataError(
                f"training window {self} ({self.days} day(s)) is too short for training.holdout_days={holdout_days}: "
                "the last holdout_days days are the holdout and the model trains on the days before them, so the "
                f"window needs at least {max(holdout_days, 1) + 1} days; widen the window or lower "
                "training.holdout_days"
            )
        cut = self.end - dt.timedelta(days=holdout_days)
        return Window(self.start, cut), Window(cut, self.end)

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
    holdout_window: Window | None = None  # the last training.holdout_days days of ``window``


def landing_days(frame: pd.DataFrame, window: Window) -> pd.Series:
    """The lake day each row landed on, as a timestamp at midnight (its landing key's day; ``read_labelled`` gives
    a key to every row).

    A row whose key names no day of the window fails: it could not be put on either side of the split.
    """
    import pandas as pd

    keys = frame[LANDING_KEY].astype("string") if LANDING_KEY in frame.columns else pd.Series(pd.NA, index=frame.index,
                                                                                            dtype="string")
    days = pd.to_datetime(keys.str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    inside = (days >= pd.Timestamp(window.start)) & (days < pd.Timestamp(window.end))
    if not inside.all():
        bad = frame.loc[~inside.to_numpy()].iloc[0]
        raise TrainingDataError(
            f"training window {window}: {int((~inside).sum())} row(s) have no landing day in the window (e.g. request "
            f"{bad.get(REQUEST_ID)!r} with {LANDING_KEY}={bad.get(LANDING_KEY)!r}), so they cannot be split by day; "
            "re-run ingest_feedback for their day"
        )
    return days


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
    """The window's rows split out of time: training ``[start, end - holdout_days)``, holdout the last days."""
    import pandas as pd

    # Rejected hyper-parameters fail here, before the window is read, not after minutes of fitting; a window too
    # short for its holdout fails after load_window, so a window without usable data says that first.
    build_estimator(model, hyperparameters)
    frame, partitions = load_window(model, window, lake_root)
    train_window, holdout_window = window.split(model.training.holdout_days)
    content = frame[[REQUEST_ID, LABEL, *model.feature_names]]
    held = (landing_days(frame, window) >= pd.Timestamp(holdout_window.start)).to_numpy()
    train_frame = content.loc[~held, [*model.feature_names, LABEL]].reset_index(drop=True)
    holdout = frame.loc[held].reset_index(drop=True)
    for name, part, days in (("training", train_frame, train_window), ("holdout", holdout, holdout_window)):
        if part[LABEL].nunique() < 2:
            raise TrainingDataError(
                f"training window {window} of model '{model.name}': the {name} days {days} "
                f"(training.holdout_days={model.training.holdout_days}) have "
                f"{f'{len(part)} rows of a single class' if len(part) else 'no rows'}; widen the window or change "
                "training.holdout_days"
            )
    prepared = Prepared(
        window=window,
        train=train_frame,
        holdout=holdout,
        fingerprint=fingerprint(content),
        partitions=partitions,
        hyperparameters=resolve_hyperparameters(model, hyperparameters),
        holdout_window=holdout_window,
    )
    log.info(
        "prepared %s window %s: %s rows from %s partitions (%s train on %s, %s holdout on %s), fingerprint %s",
        model.name, window, len(frame), len(partitions), len(train_frame), train_window, len(holdout),
        holdout_window, prepared.fingerprint[:12],
    )
    return prepared


def write_holdout(holdout: pd.DataFrame, path: str | os.PathLike[str]) -> str:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    holdout.to_parquet(path, index=False)
    return str(path)
