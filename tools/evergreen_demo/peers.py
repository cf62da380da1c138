"""What the rules a team would otherwise wire up by hand would have done on the same month.

* **The classic weekly check** ("retrain when this week's accuracy < the deployment baseline - 0.05"): the first
  champion keeps serving; every 7 days after it went live its accuracy on the past week's requests (the same
  requests and outcomes the month had, scored by that model offline) is compared with its accuracy on its own
  holdout. The day the rule first fires is the earliest day such a team retrains; the new model serves the day after.
* **Evidently's default drift verdict** (``Report([DataDriftPreset()])`` with every default, on the first champion's
  training rows as reference): the day it first says "dataset drift". Evidently only reports: on its own it retrains
  nothing, and a concept shift, which moves no feature, it cannot see.
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING, Any

from evergreen import lake, tracking

if TYPE_CHECKING:
    from evergreen_demo.month import Month

WEEK = 7
ACCURACY_DROP = 0.05


def _first_champion(month: Month) -> tuple[str, int] | None:
    """The first champion's version and the day number it started serving (the day after it was set)."""
    from evergreen.promote import ledger

    for e in ledger.entries(month.store, month.model.name):
        if e.event == ledger.ALIAS_MOVE and e.alias == tracking.CHAMPION and e.new_version:
            # entries are stamped with the simulated clock: the phase after day D runs on D + 1 at 00:10
            return e.new_version, month.scenario.number(e.ts.date())
    return None


def _features(month: Month, frame: Any) -> list[list[Any]]:
    return frame[month.model.feature_names].astype(object).where(frame[month.model.feature_names].notna(),
                                                                 None).values.tolist()


def weekly_accuracy_rule(month: Month) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from evergreen.serve.models import LoadedModel, MlflowModelSource, score_rows
    from evergreen_demo.world import requests

    first = _first_champion(month)
    if first is None:
        return {"rule": "weekly accuracy < baseline - 0.05", "fired": None, "reason": "no champion"}
    version, live_from = first
    mv = month.registry.get_model_version(month.model.name, version)
    loaded = LoadedModel(month.model, version, MlflowModelSource(month.model.name).load(version))

    def accuracy(frame: Any, labels: Any) -> float:
        (outcome,) = score_rows(loaded, [_features(month, frame)])
        if isinstance(outcome, Exception):
            raise outcome
        predicted = (np.asarray(outcome.scores) >= 0.5).astype(int)
        return float((predicted == np.asarray(labels)).mean())

    holdout = pd.read_parquet((mv.tags or {})[f"{tracking.TAG}holdout_uri"])
    baseline = accuracy(holdout, holdout["label"])
    s = month.scenario
    daily: dict[int, tuple[float, int]] = {}
    for n in range(live_from, s.days + 1):
        reqs = requests(month.model, s, n)
        daily[n] = (accuracy(reqs.features, reqs.labels), len(reqs.labels))
    checks = []
    fired = None
    for check in range(live_from + WEEK - 1, s.days + 1, WEEK):
        week = [daily[n] for n in range(check - WEEK + 1, check + 1)]
        acc = sum(a * k for a, k in week) / sum(k for _, k in week)
        checks.append({"day": check, "accuracy": round(acc, 4)})
        if fired is None and acc < baseline - ACCURACY_DROP:
            fired = check
    return {"rule": f"weekly accuracy < baseline - {ACCURACY_DROP}", "version": version,
            "baseline": round(baseline, 4), "checks": checks, "fired": fired,
            "daily": {n: round(a, 4) for n, (a, _) in daily.items()}}


def evidently_default(month: Month, days: list[int]) -> dict[str, Any]:
    """Evidently's default DataDriftPreset on the first champion's training rows vs the requests of ``days``."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from evergreen_demo.world import requests

    first = _first_champion(month)
    if first is None:
        return {"verdicts": {}, "first_drift": None}
    version, _ = first
    mv = month.registry.get_model_version(month.model.name, version)
    start, end = tracking.version_window(mv)
    names = month.model.feature_names
    parts = []
    day = start
    while day < end:
        path = lake.labelled_path(month.model.name, day)
        if lake.exists(path):
            parts.append(pd.read_parquet(path)[names])
        day += dt.timedelta(days=1)
    reference = pd.concat(parts, ignore_index=True)
    verdicts = {}
    for n in days:
        current = requests(month.model, month.scenario, n).features[names]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
        verdicts[n] = _dataset_drift(snapshot.dict())
    drifted = [n for n, v in verdicts.items() if v["drift"]]
    return {"verdicts": verdicts, "first_drift": drifted[0] if drifted else None}


def _dataset_drift(doc: dict) -> dict[str, Any]:
    """Evidently's dataset verdict from a snapshot dict: the share of drifted columns and whether it reached the
    preset's default drift_share (0.5)."""
    for metric in doc.get("metrics", []):
        name = str(metric.get("metric_name", ""))
        if name.startswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            return {"share": round(share, 3), "drift": share >= 0.5}
    raise ValueError("no DriftedColumnsCount metric in the Evidently snapshot")
