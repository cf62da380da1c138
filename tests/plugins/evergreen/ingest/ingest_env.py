"""Shared by the ingestion tests: a working folder with a real SQLite store, a landing zone and a lake on local
disk, and the landed files written the way source systems export them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pandas as pd

from evergreen import lake
from evergreen.config import get_config
from evergreen.ingest import tasks
from evergreen.store.sql import SqlStore
from evergreen_demo import simulate

MODEL = get_config().model("churn")
PRED_DAY = dt.date(2026, 11, 2)
DAY = dt.date(2026, 11, 3)  # outcomes of PRED_DAY land here
NEXT = dt.date(2026, 11, 4)


@dataclasses.dataclass
class Env:
    root: Path
    store: SqlStore

    @property
    def landing(self) -> str:
        return str(self.root / "landing")

    @property
    def lake(self) -> str:
        return str(self.root / "lake")

    @property
    def store_uri(self) -> str:
        return self.store.uri

    def land(self, day: dt.date, name: str, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> str:
        """Write one outcome file into the day's landing folder (CSV or Parquet by the name's suffix)."""
        folder = Path(lake.landing_dir(MODEL.name, day, self.landing))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if raw is not None:
            path.write_bytes(raw)
        elif name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return str(path)

    def run(self, start: dt.date = DAY, end: dt.date | None = None, model=MODEL) -> list[tasks.DayResult]:
        return tasks.ingest_interval(model, start, end or start + dt.timedelta(days=1), self.store,
                                     landing_root=self.landing, lake_root=self.lake)

    def quarantine(self, day: dt.date = DAY) -> pd.DataFrame:
        return pd.read_parquet(lake.quarantine_path(MODEL.name, day, self.lake))

    def labelled(self, day: dt.date = DAY) -> pd.DataFrame:
        return pd.read_parquet(lake.labelled_path(MODEL.name, day, self.lake))

    def digest(self, days=(DAY,)) -> dict:
        return tasks.state_digest(self.store, MODEL.name, days, self.lake)


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    return Env(root, SqlStore(f"sqlite:///{root / 'store.db'}"))

def logged_day(env: Env, n: int = 50, day: dt.date = PRED_DAY) -> simulate.Day:
    """Log ``n`` predictions of ``day`` in the store (as the serving app does) and return the simulated day."""
    d = simulate.simulate_day(MODEL, day, n)
    env.store.upsert_predictions(MODEL.name, d.predictions, MODEL.feature_names)
    return d


def outcome_csv_frame(d: simulate.Day, with_features: bool = False) -> pd.DataFrame:
    """The outcome file a source system exports, timestamps as ISO-8601 text like a CSV carries them."""
    frame = simulate.outcome_file_frame(MODEL, d, with_features=with_features)
    frame[MODEL.timestamp] = frame[MODEL.timestamp].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return frame


def reasons_by_id(q: pd.DataFrame) -> dict[str, tuple[str, str]]:
    raw = [json.loads(r) for r in q["raw"]]
    return {r.get(MODEL.request_id) if isinstance(r, dict) else None: (c, why)
            for r, c, why in zip(raw, q["reason_code"], q["reason"])}


def land_mixed_days(env: Env, n: int = 300) -> list[dt.date]:
    """Two landing days with everything at once: good rows, bad rows, duplicates, unmatched, a history file
    with features, a Parquet file, an empty file, an unreadable file and one of another format."""
    d = logged_day(env, n)
    out = outcome_csv_frame(d)
    half = n // 2
    bad = out.iloc[:5].copy().astype(object)
    bad.loc[bad.index[0], MODEL.label.name] = "7"
    bad.loc[bad.index[1], MODEL.timestamp] = "not-a-time"
    bad.loc[len(bad)] = ["nobody", "2026-11-03T01:00:00Z", 1]
    env.land(DAY, "a.csv", out.iloc[:half])
    env.land(DAY, "b.csv", bad)
    env.land(DAY, "c.csv", raw=b"")
    env.land(DAY, "d.csv.gz", raw=b"an upload cut short")  # unreadable: kept whole in quarantine
    env.land(DAY, "notes.txt", raw=b"not an outcome file")  # ignored, listed in the record
    hist = simulate.outcome_file_frame(MODEL, simulate.simulate_day(MODEL, dt.date(2026, 10, 1), 40), True)
    hist.loc[0, "plan"] = "gold"
    env.land(DAY, "history.parquet", hist)
    env.land(NEXT, "late.parquet", simulate.outcome_file_frame(MODEL, d).iloc[half:])
    return [DAY, NEXT]

