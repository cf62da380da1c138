"""Synthetic production traffic for any model config: logged predictions and the outcomes that follow.

Used by the demo, the benchmarks and the tests. The ground truth is a fixed logistic function of the features
(seeded by the model name), so a model can learn it; ``drift`` shifts the feature distributions (numeric means by
``drift`` standard deviations, categories towards their last value) and ``concept_shift`` changes the true
function itself, which is what makes a served model decay.

Days are UTC dates. Predictions of day D are scored during D; their outcomes become known during D + 1 and land
in the landing zone under ``dt=D+1``.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import FeatureSpec, ModelConfig


@dataclass(frozen=True)
class Day:
    predictions: pd.DataFrame  # store columns + features
    outcomes: pd.DataFrame  # request_id, ts, label (ts during the next day)


def _rng(model: str, *salt: object) -> np.random.Generator:
    import numpy as np

    return np.random.default_rng(zlib.crc32("/".join(map(str, (model, *salt))).encode()))


def _numeric(spec: FeatureSpec, n: int, rng: np.random.Generator, drift: float) -> np.ndarray:
    import numpy as np

    lo = spec.min if spec.min is not None else 0.0
    hi = spec.max if spec.max is not None else lo + 1000.0
    # Keep simulated values in a plausible core of the allowed range, so a drift shift stays valid input.
    centre, spread = lo + (hi - lo) * 0.3, (hi - lo) * 0.08
    values = rng.normal(centre + drift * spread, spread, n)
    values = np.clip(values, lo, hi)
    return np.round(values) if spec.type == "int" else np.round(values, 2)


def feature_frame(model: ModelConfig, n: int, seed: object, drift: float = 0.0) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    rng = _rng(model.name, "features", seed)
    cols: dict[str, object] = {}
    for spec in model.features:
        if spec.type in ("int", "float"):
            values = _numeric(spec, n, rng, drift)
            cols[spec.name] = values.astype("int64") if spec.type == "int" else values
        elif spec.type == "category":
            k = len(spec.categories)
            weights = np.linspace(1.0, 1.0 + drift * 2.0, k) if drift else np.ones(k)
            cols[spec.name] = rng.choice(np.array(spec.categories, dtype=object), n, p=weights / weights.sum())
        else:
            cols[spec.name] = rng.random(n) < min(0.9, 0.5 + drift * 0.2)
    frame = pd.DataFrame(cols)
    for spec in model.features:
        if spec.nullable:
            frame.loc[rng.random(n) < 0.02, spec.name] = None
    return frame


def true_probability(model: ModelConfig, features: pd.DataFrame, concept_shift: float = 0.0) -> np.ndarray:
    """The ground truth's P(label = 1 | features): a fixed logistic function of standardised features."""
    import numpy as np

    rng = _rng(model.name, "weights")
    logit = np.full(len(features), -0.5)
    for spec in model.features:
        w = rng.normal(0, 1.2) * (1.0 - 2.0 * concept_shift if spec is model.features[0] else 1.0)
        col = features[spec.name]
        if spec.type in ("int", "float"):
            x = col.astype("float64").fillna(col.astype("float64").mean())
            std = x.std() or 1.0
            logit += w * ((x - x.mean()) / std).to_numpy()
        elif spec.type == "category":
            effects = dict(zip(spec.categories, rng.normal(0, 0.8, len(spec.categories))))
            logit += col.map(effects).astype("float64").fillna(0.0).to_numpy() * (1 + concept_shift)
        else:
            logit += w * 0.5 * col.astype("float64").to_numpy()
    return 1.0 / (1.0 + np.exp(-logit))


def simulate_day(
    model: ModelConfig,
    day: dt.date,
    n: int,
    *,
    drift: float = 0.0,
    concept_shift: float = 0.0,
    model_version: str = "1",
    arm: str = "champion",
    score_noise: float = 0.15,
) -> Day:
    """One day of scored requests (as the serving app logs them) and their outcomes."""
    import numpy as np
    import pandas as pd

    rng = _rng(model.name, "day", day.isoformat())
    feats = feature_frame(model, n, day.isoformat(), drift)
    p_true = true_probability(model, feats, concept_shift)
    label = (rng.random(n) < p_true).astype("int64")
    # The served model learned the world before any concept shift: its scores follow the unshifted truth, so a
    # concept shift shows up as decay of the live metric.
    p_served = p_true if not concept_shift else true_probability(model, feats, 0.0)
    score = np.clip(p_served + rng.normal(0, score_noise, n), 0, 1)
    start = pd.Timestamp(day, tz="UTC")
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, 86_400_000_000, n)), unit="us")
    request_id = [f"{model.name}-{day:%Y%m%d}-{i:07d}" for i in range(n)]
    predictions = pd.DataFrame(
        {
            "request_id": request_id,
            "entity_id": [f"e{v:06d}" for v in rng.integers(0, max(n // 3, 1), n)],
            "ts": ts,
            "model_version": model_version,
            "arm": arm,
            "prediction": (score >= 0.5).astype("float64"),
            "score": score,
        }
    )
    predictions = pd.concat([predictions, feats], axis=1)
    outcome_ts = ts + pd.Timedelta(days=1)
    outcomes = pd.DataFrame({"request_id": request_id, "ts": outcome_ts, model.label.name: label})
    return Day(predictions=predictions, outcomes=outcomes)


def outcome_file_frame(model: ModelConfig, day: Day, with_features: bool = False) -> pd.DataFrame:
    """The outcome file a source system exports: request id, outcome time, label (and features if asked).

    Feature-carrying files are history exports or the bootstrap before any model serves.
    """
    frame = day.outcomes.rename(columns={"request_id": model.request_id, "ts": model.timestamp})
    if with_features:
        extra = day.predictions[[model.entity_id if model.entity_id in day.predictions else "entity_id",
                                 *model.feature_names]]
        extra = extra.rename(columns={"entity_id": model.entity_id})
        frame = frame.join(extra)
    return frame


def labelled_frame(model: ModelConfig, day: Day) -> pd.DataFrame:
    """A simulated day as the lake's labelled partition holds it (the layout ``ingest_feedback`` writes).

    For tests and benchmarks that need a labelled lake without running ingestion; it lands under the outcome
    day (``lake.labelled_path(model, day + 1)``).
    """
    import pandas as pd

    p, o = day.predictions, day.outcomes
    frame = pd.DataFrame({
        "request_id": p["request_id"].astype(object),
        "entity_id": p["entity_id"].astype(object),
        "ts": p["ts"].astype("datetime64[us, UTC]"),
        "outcome_ts": o["ts"].astype("datetime64[us, UTC]"),
        "label": o[model.label.name].astype("int64"),
        "model_version": p["model_version"].astype(object),
        "arm": p["arm"].astype(object),
        "source": "logged",
    })
    return pd.concat([frame, p[model.feature_names]], axis=1)
