"""Lake days for the training tests (imported by name: this folder is on sys.path under pytest)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from evergreen import lake
from evergreen_demo import simulate

FIRST = dt.date(2026, 11, 1)  # first simulated scoring day; its outcomes land on 2026-11-02
DAYS = 6
ROWS_PER_DAY = 500


def fast(model):
    """The demo model with a small forest and thresholds sized for a few thousand rows."""
    spec = dataclasses.replace(
        model.training, hyperparameters={"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 5}, min_rows=400
    )
    return dataclasses.replace(model, training=spec)


def write_lake(model, root: str, first: dt.date, days: int, rows: int, **kwargs) -> None:
    for i in range(days):
        day = first + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, rows, **kwargs))
        lake.write_parquet_atomic(frame, lake.labelled_path(model.name, day + dt.timedelta(days=1), root))
