"""The demo's simulated world: who asks for a score each day, what their features are, and whether they churn.

The truth is :func:`evergreen_demo.simulate.true_probability` (a fixed logistic function of the day's standardised
features). Two things change on the scenario's days:

* a **distribution shift** (covariate drift): from ``shift_day`` the numeric features move by ``drift`` standard
  deviations and the categories tilt (:func:`evergreen_demo.simulate.feature_frame`). Inputs leave the range the
  first model was trained on, so its scores degrade although the truth's form is unchanged;
* a **concept shift**: from ``concept_day`` the effect of the first two numeric features on churn changes by
  ``concept`` (their standardised values add ``concept * 2 * z`` to the truth's log-odds): the same inputs now mean
  something else, and every model trained before that day decays.

Everything is seeded by the model name and the day, so a day's requests and outcomes are the same in every run.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evergreen_demo.simulate import _rng, feature_frame, true_probability

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import ModelConfig


@dataclass(frozen=True)
class Scenario:
    """The month, in day numbers (day 1 = ``first_day``)."""

    first_day: dt.date = dt.date(2026, 10, 1)
    days: int = 27
    rows_per_day: int = 1000
    customers: int = 4000
    # days 1..history_days land the source system's history export (outcomes with their features): the bootstrap
    history_days: int = 2
    history_rows: int = 4000  # the first model trains on day 1's, as much as a 5-day retrain window holds
    shift_day: int = 8
    drift: float = 2.0
    concept_day: int = 16
    concept: float = 1.5
    # a landing file with bad rows of several kinds (quarantined with reasons, counted; the valid rows land)
    bad_input_day: int = 5
    # retrain_<model>'s cooldown in simulated hours: a drift that persists signals every day
    cooldown_hours: float = 72.0
    # an A/B test without a decision ends (the challenger retired) after this many matured days
    ab_max_days: int = 3
    # ops roll the champion back after that day's runs (rollback_<model>, by hand, through the REST API)
    rollback_day: int = 24
    # after the month: `airflow backfill create` of monitor_drift over these days (they ran already)
    backfill: tuple[int, int] = (6, 10)

    def date(self, n: int) -> dt.date:
        return self.first_day + dt.timedelta(days=n - 1)

    def number(self, day: dt.date) -> int:
        return (day - self.first_day).days + 1

    @property
    def last_day(self) -> dt.date:
        return self.date(self.days)

    def drift_on(self, n: int) -> float:
        return self.drift if n >= self.shift_day else 0.0

    def concept_on(self, n: int) -> float:
        return self.concept if n >= self.concept_day else 0.0

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["first_day"] = self.first_day.isoformat()
        out["backfill"] = list(self.backfill)
        return out


def truth(model: ModelConfig, features: pd.DataFrame, concept: float) -> np.ndarray:
    """P(churn | features) on a day with concept shift ``concept`` (0: the original world)."""
    import numpy as np

    p = true_probability(model, features, 0.0)
    if not concept:
        return p
    logit = np.log(p / (1 - p))
    numeric = [f for f in model.features if f.type in ("int", "float")][:2]
    for spec in numeric:
        x = features[spec.name].astype("float64")
        z = ((x - x.mean()) / (x.std() or 1.0)).fillna(0.0).to_numpy()
        logit = logit + concept * 2.0 * z
    return 1.0 / (1.0 + np.exp(-logit))


@dataclass(frozen=True)
class Requests:
    """One day's scoring requests and what became of them."""

    day: dt.date
    request_ids: list[str]
    entity_ids: list[str]
    features: pd.DataFrame
    labels: np.ndarray  # 1 = churned

    def records(self, model: ModelConfig, rows: slice) -> list[dict]:
        """The requests as the scoring app's records (JSON-ready: NaN as null, numpy scalars as Python)."""
        out = []
        frame = self.features.iloc[rows]
        for offset, (_, row) in enumerate(frame.iterrows()):
            i = rows.start + offset
            rec: dict = {model.entity_id: self.entity_ids[i], model.request_id: self.request_ids[i]}
            for spec in model.features:
                v = row[spec.name]
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    rec[spec.name] = None
                elif spec.type == "int":
                    rec[spec.name] = int(v)
                elif spec.type == "float":
                    rec[spec.name] = float(v)
                elif spec.type == "bool":
                    rec[spec.name] = bool(v)
                else:
                    rec[spec.name] = str(v)
            out.append(rec)
        return out


def requests(model: ModelConfig, scenario: Scenario, n_day: int, *, n: int | None = None,
             prefix: str = "") -> Requests:
    """Day ``n_day``'s requests (``prefix`` names other streams, e.g. the history export)."""
    day = scenario.date(n_day)
    n = scenario.rows_per_day if n is None else n
    seed = f"{prefix}{day.isoformat()}"
    feats = feature_frame(model, n, f"month/{seed}", scenario.drift_on(n_day))
    rng = _rng(model.name, "month", seed)
    labels = (rng.random(n) < truth(model, feats, scenario.concept_on(n_day))).astype("int64")
    customers = rng.integers(0, scenario.customers, n)
    tag = f"{prefix}-" if prefix else ""
    return Requests(day=day, request_ids=[f"{model.name}-{tag}{day:%Y%m%d}-{i:05d}" for i in range(n)],
                    entity_ids=[f"c{c:05d}" for c in customers], features=feats, labels=labels)
