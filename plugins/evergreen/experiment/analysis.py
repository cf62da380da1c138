"""The A/B analysis of champion against challenger (pure: DataFrames and typed config in, a dataclass out).

**The prediction-log contract with the serving app** (the rows :meth:`evergreen.store.base.Store.read_predictions`
returns; arm names in :mod:`evergreen.experiment.policy`):

* *split* mode -- every entity is assigned to one arm by a deterministic hash of its entity id and the experiment
  id. A request the champion answered is logged with ``arm = "champion"`` and the champion's ``model_version``; one
  the challenger answered with ``arm = "challenger"`` and the challenger's version.
* *shadow* mode -- the champion answers every request and its row is logged as in split mode (``arm =
  "champion"``, the request's own id). The challenger's score of the same request is a second row: ``arm =
  "shadow"``, the challenger's version, the same entity id and timestamp, and request id
  :func:`~evergreen.experiment.policy.shadow_request_id` (``<request id>~shadow``), because the store keys
  predictions by request id. The request's outcome is keyed by the champion row's id and joins both rows.
* Any other row -- no arm, another arm name, or a version that is not its arm's (a champion that moved during the
  test, a server that had not yet re-read the aliases) -- is not part of the test: counted under ``excluded`` and
  never used.

**What is analysed.** The prediction days ``[window_start, window_end)`` from the test's start to the last day whose
labels have all landed (the caller decides that from the ingestion records, :mod:`evergreen.monitor.maturity`,
exactly as ``evaluate_performance`` does), joined with their outcomes by request id. Every daily run analyses the
whole matured window so far (a cumulative look); the sequential test makes those repeated looks safe.

**Steps** (each one can end the analysis with its reason):

1. *Input checks* -- outcomes that join no assigned prediction, an arm without traffic, an arm without matured
   outcomes: ``cannot_decide``, explained, never a decision.
2. *Sample-ratio mismatch* -- Pearson's chi-square of the assignment counts (entities per arm in split mode, against
   ``1 - challenger_share : challenger_share``; champion rows against shadow rows, 1 : 1, in shadow mode). A
   p-value under ``srm_p_value`` (0.001, as GrowthBook) means the assignment or the logging is broken and no effect
   estimate can be trusted: status ``srm``, the caller alerts, nothing is decided.
3. *The effect* -- ``challenger - champion`` on the configured metric:

   * ``outcome_rate`` (split): the share of each arm's entities with a matured outcome of ``outcome_class`` (an
     entity counts once: 1 when any of its matured outcomes is that class). Two-proportion z interval
     (:func:`evergreen.stats.two_sample_difference`).
   * ``model_metric`` (split): the model's metric on each arm's labelled rows (each arm scored by its own model),
     the difference of two independent estimates with the normal interval ``sqrt(se_a^2 + se_b^2)`` (DeLong per
     arm for ROC AUC).
   * shadow mode, always: both models on the *same* requests, the paired difference (DeLong's paired covariance
     for ROC AUC, :func:`evergreen.stats.paired_difference`). The champion answered every request, so a business
     outcome cannot differ between the models; only the paired model metric can.

   Beside the analytic interval, a percentile bootstrap of the same difference (resampling each arm on its own,
   or the pairs together in shadow mode): always for an outcome rate, up to ``bootstrap_max_units`` rows for a
   model metric (whose bootstrap costs draws x rows).
4. *The sequential test* -- decisions read only the always-valid confidence sequence of the effect
   (:func:`evergreen.stats.confidence_sequence`, the normal-mixture asymptotic CS of Waudby-Smith et al. 2024 that
   GrowthBook uses, tuned by ``sequential_tuning``), so looking every day keeps the false-positive rate at
   ``alpha``; daily fixed-horizon tests would not (``bench/ab.py`` measures both).
5. *The decision* (:func:`judge`), with ``gain`` the effect in the ``better`` direction and ``[L, U]`` its CS:

   * ``L > 0`` and at least the minimum sample size: **promote** the challenger;
   * ``U < 0``: **stop**, status ``rejected`` -- the challenger is worse. Allowed before the minimum sample size:
     the sequence is valid at every look, and every further day serves users a worse model;
   * ``U < min_detectable_effect`` and at least the minimum sample size: **stop**, status ``retired`` -- any gain
     is smaller than the effect worth detecting (futility);
   * ``max_days`` matured days without one of those: **stop**, ``retired`` (inconclusive);
   * otherwise **continue**.

   The minimum sample size is the fixed-horizon one for ``min_detectable_effect`` at ``power`` and ``alpha``
   (:func:`evergreen.stats.minimum_sample_size`, with the per-unit standard deviations observed so far). It keeps
   a lucky early streak (and novelty effects) from promoting; the confidence sequence alone keeps the error rate.

Statuses: ``promote``, ``stop``, ``continue``, ``srm``, ``cannot_decide`` (bad input, with the reason),
``immature`` (no prediction day of the test has all its labels yet). The caller applies promote and stop, never
in a backfill.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.experiment.policy import CHALLENGER_ARM, CHAMPION_ARM, SHADOW_ARM, SHADOW_SUFFIX, AbTestPolicy
from evergreen.jsonable import jsonable

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import ModelConfig
    from evergreen.monitor.maturity import LabelArrival
    from evergreen.stats import Interval

PROMOTE, STOP, CONTINUE, SRM, CANNOT_DECIDE, IMMATURE = (
    "promote", "stop", "continue", "srm", "cannot_decide", "immature")
STATUSES = (PROMOTE, STOP, CONTINUE, SRM, CANNOT_DECIDE, IMMATURE)
#: the version status a stopped test leaves on the challenger (evergreen.promote.registry.STATUSES)
REJECTED, RETIRED = "rejected", "retired"
OUTCOME_RATE, MODEL_METRIC = "outcome_rate", "model_metric"


@dataclass(frozen=True)
class ArmSummary:
    """One arm: its traffic in the window, its matured units and the metric on them with its interval."""

    arm: str
    version: str | None
    requests: int
    entities: int
    labelled: int  # requests with a matured outcome
    units: int  # analysis units with a matured outcome (entities for outcome_rate, requests otherwise)
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    method: str = ""


@dataclass(frozen=True)
class Judgement:
    """What the sequential rule makes of an effect (:func:`judge`)."""

    status: str  # promote | stop | continue
    stop_status: str | None  # rejected | retired for a stop
    reason: str
    gain: float
    sequence: Interval  # the always-valid CS of the gain
    minimum_units: int  # both arms together
    units: int


@dataclass
class AbAnalysis:
    model: str
    mode: str
    metric: str  # what is compared, e.g. "roc_auc" or "outcome_rate(churned=1)"
    better: str  # higher | lower
    window_start: dt.date
    window_end: dt.date  # exclusive
    as_of: dt.date
    champion_version: str | None
    challenger_version: str | None
    status: str = CANNOT_DECIDE
    reason: str = ""
    stop_status: str | None = None
    days: int = 0  # matured prediction days analysed
    alpha: float = 0.05
    arms: list[ArmSummary] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    srm: dict[str, Any] = field(default_factory=dict)
    effect: dict[str, Any] | None = None  # the analytic interval of challenger - champion (stats.Interval)
    bootstrap: dict[str, Any] | None = None
    bootstrap_note: str = ""
    sequential: dict[str, Any] | None = None  # the always-valid CS of the gain, with tuning and p-value
    gain: float | None = None
    units: int = 0
    minimum_units: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def decided(self) -> bool:
        return self.status in (PROMOTE, STOP)

    def numbers(self) -> dict[str, Any]:
        """The figures a decision is recorded with (ledger details, alerts, the task's XCom)."""
        out: dict[str, Any] = {"status": self.status, "metric": self.metric, "better": self.better,
                               "window": [self.window_start.isoformat(), self.window_end.isoformat()],
                               "days": self.days, "units": self.units, "minimum_units": self.minimum_units,
                               "gain": self.gain}
        for a in self.arms:
            out[f"{a.arm}_units"] = a.units
            out[f"{a.arm}_value"] = a.value
        if self.effect:
            out["effect"] = self.effect["value"]
            out["effect_ci"] = [self.effect["low"], self.effect["high"]]
            out["effect_method"] = self.effect["method"]
            out["p_value"] = self.effect.get("p_value")
        if self.sequential:
            out["gain_cs"] = [self.sequential["low"], self.sequential["high"]]
            out["always_valid_p"] = self.sequential.get("p_value")
        if self.srm:
            out["srm_p"] = self.srm.get("p_value")
        return jsonable(out)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["window"] = {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()}
        del out["window_start"], out["window_end"]
        out["as_of"] = self.as_of.isoformat()
        out["decided"] = self.decided
        return jsonable(out)


# --- the sequential decision rule ----------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:+.4f}"


def judge(policy: AbTestPolicy, gain: float, se: float, units: int, minimum_units: int, days: int) -> Judgement:
    """The decision on an effect: ``gain`` (the effect in the ``better`` direction) with standard error ``se`` over
    ``units`` analysis units, ``minimum_units`` the minimum sample size, ``days`` the matured days analysed. Only
    the always-valid confidence sequence of the gain decides (the module's rule, step 5)."""
    from evergreen import stats

    confidence = 1.0 - policy.alpha
    cs = stats.confidence_sequence(gain, se, units, confidence, tuning=policy.sequential_tuning)
    mde = policy.min_detectable_effect
    level = f"always-valid {confidence:.0%} confidence sequence of the gain [{_fmt(cs.low)}, {_fmt(cs.high)}]"
    enough = units >= minimum_units
    size = (f"{units} units {'>=' if enough else '<'} the minimum sample size {minimum_units} (effect {mde:g}, "
            f"power {policy.power:g})")
    if cs.low > 0 and enough:
        return Judgement(PROMOTE, None, f"the challenger is better: {level} excludes 0; {size}", gain, cs,
                         minimum_units, units)
    if cs.high < 0:
        return Judgement(STOP, REJECTED, f"the challenger is worse: {level} excludes 0; {size}", gain, cs,
                         minimum_units, units)
    if cs.high < mde and enough:
        return Judgement(STOP, RETIRED, f"futility: {level} is below the minimum detectable effect {mde:g}; the "
                         f"challenger cannot be better by an effect worth detecting; {size}", gain, cs,
                         minimum_units, units)
    if days >= policy.max_days:
        return Judgement(STOP, RETIRED, f"inconclusive after {days} matured days (max_days {policy.max_days}): "
                         f"{level}; {size}", gain, cs, minimum_units, units)
    if cs.low > 0:
        why = f"the challenger looks better ({level} excludes 0) but {size}"
    else:
        why = f"{level} contains 0; {size}"
    return Judgement(CONTINUE, None, f"continue: {why}; day {days} of at most {policy.max_days}", gain, cs,
                     minimum_units, units)


def paired_minimum_units(sd: float, effect: float, confidence: float, power: float) -> int:
    """Pairs a two-sided fixed-horizon paired test needs: ``(z_{1-alpha/2} + z_power)^2 sd^2 / effect^2``."""
    from statistics import NormalDist

    from evergreen import stats

    z = stats.z_value(confidence) + NormalDist().inv_cdf(power)
    return int(math.ceil(z * z * sd * sd / (effect * effect)))


# --- the frame work ------------------------------------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    import pandas as pd

    if name in frame.columns:
        return frame[name]
    return pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _text(values: pd.Series) -> pd.Series:
    """Ids as strings with None for missing (the arm and version columns may hold None, NaN or numbers)."""
    return values.astype(object).where(values.notna(), None).map(lambda v: None if v is None else str(v))


def _labels_by_request(outcomes: pd.DataFrame) -> pd.DataFrame:
    """One label per request id (the store holds one; a frame from elsewhere keeps its last)."""
    import pandas as pd

    if not {"request_id", "label"} <= set(outcomes.columns):
        return pd.DataFrame({"request_id": pd.Series([], dtype=object), "label": pd.Series([], dtype="float64")})
    out = outcomes[["request_id", "label"]].drop_duplicates("request_id", keep="last")
    return pd.DataFrame({"request_id": out["request_id"].astype(str).to_numpy(),
                         "label": pd.to_numeric(out["label"], errors="coerce").to_numpy(dtype="float64")})


def _interval_dict(interval: Interval) -> dict[str, Any]:
    return interval.to_dict()


def analyze(
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    model: ModelConfig,
    *,
    champion_version: str | None,
    challenger_version: str | None,
    window_start: dt.date,
    window_end: dt.date,
    as_of: dt.date,
    labels: LabelArrival | None = None,
    seed: int | None = None,
) -> AbAnalysis:
    """Analyse the test on the matured prediction days ``[window_start, window_end)``.

    ``predictions`` are the store's rows of those days (every arm), ``outcomes`` the known outcomes of their
    request ids (``request_id``, ``label``; extra rows are ignored). ``labels`` is the window's label arrival,
    recorded with the result. ``as_of`` (the run's interval end) is recorded, never used to decide.
    """
    policy = model.ab_test
    positive = model.label.positive_class
    shadow = policy.mode == "shadow"
    if shadow or policy.metric == MODEL_METRIC:
        from evergreen import stats

        metric, better = model.metric, ("higher" if stats.greater_is_better(model.metric) else "lower")
    else:
        cls = positive if policy.outcome_class is None else policy.outcome_class
        metric, better = f"outcome_rate({model.label.name}={cls})", str(policy.better)
    days = max((window_end - window_start).days, 0)
    result = AbAnalysis(model=model.name, mode=policy.mode, metric=metric, better=better, window_start=window_start,
                        window_end=window_end, as_of=as_of, champion_version=champion_version,
                        challenger_version=challenger_version, days=days, alpha=policy.alpha,
                        labels=labels.to_dict() if labels is not None else {})
    window = f"[{window_start}, {window_end})"
    if champion_version is None or challenger_version is None:
        result.reason = (f"no test to analyse: champion {champion_version or 'missing'}, challenger "
                         f"{challenger_version or 'missing'}; a test needs both aliases")
        return result
    if days == 0:
        result.status = IMMATURE
        result.reason = (f"no prediction day of the test has all its labels yet (label_delay_days="
                         f"{model.performance.label_delay_days}): " + (labels.describe() if labels is not None
                                                                       else f"window {window} is empty"))
        return result
    if not shadow and policy.metric == OUTCOME_RATE and cls not in model.label.classes:
        result.reason = (f"ab_test.outcome_class {cls!r} is not one of the label's classes "
                         f"{list(model.label.classes)}; fix the model's ab_test block")
        return result
    if predictions.empty:
        result.reason = f"no traffic: no predictions logged for model '{model.name}' in {window}"
        return result
    seed = model.training.seed if seed is None else seed
    if shadow:
        _shadow(result, predictions, outcomes, model, seed)
    else:
        _split(result, predictions, outcomes, model, seed)
    return result


def _assignments(predictions: pd.DataFrame, arms: dict[str, str]) -> tuple[pd.DataFrame, dict[str, int], pd.Series]:
    """The rows of the test (arm -> expected version in ``arms``) with columns request_id, entity_id, arm (and
    score, prediction); the excluded counts by reason; the request ids of the rows outside the test."""

    arm = _text(_column(predictions, "arm"))
    version = _text(_column(predictions, "model_version"))
    known = arm.isin(list(arms))
    expected = arm.map(arms)
    matches = known & (version == expected)
    excluded: dict[str, int] = {}
    no_arm = int(arm.isna().sum())
    if no_arm:
        excluded["no_arm"] = no_arm
    other_arm = int((arm.notna() & ~known).sum())
    if other_arm:
        excluded["other_arm"] = other_arm
    wrong_version = int((known & ~matches).sum())
    if wrong_version:
        excluded["other_version"] = wrong_version
    rows = predictions.loc[matches.to_numpy(), [c for c in ("request_id", "entity_id", "score", "prediction")
                                                if c in predictions.columns]].copy()
    rows["arm"] = arm[matches].to_numpy()
    rows["request_id"] = rows["request_id"].astype(str)
    # a row without an entity id is its own entity (its request), never one shared "unknown" entity
    entity = _text(rows["entity_id"]) if "entity_id" in rows else rows["request_id"].where(False)
    rows["entity_id"] = entity.where(entity.notna(), "request:" + rows["request_id"]).to_numpy()
    unassigned = predictions.loc[~matches.to_numpy(), "request_id"].astype(str)
    return rows, excluded, unassigned


def _unassigned_outcomes(ids: pd.Series, labelled: pd.DataFrame, strip_shadow: bool = False) -> int:
    """How many matured outcomes join a prediction outside the test (no arm, another arm or version)."""
    if not len(ids) or labelled.empty:
        return 0
    if strip_shadow:
        ids = ids[~ids.str.endswith(SHADOW_SUFFIX)]
    return int(ids.isin(labelled["request_id"]).sum())


def _srm(result: AbAnalysis, policy: AbTestPolicy, counts: dict[str, int], shares: dict[str, float],
         unit: str) -> bool:
    """Record the sample-ratio check; True when it fails (status srm)."""
    from evergreen import stats

    names = list(counts)
    stat, p = stats.chi_square_gof([counts[n] for n in names], [shares[n] for n in names])
    result.srm = {"unit": unit, "counts": dict(counts), "expected_shares": dict(shares), "chi_square": stat,
                  "p_value": p, "threshold": policy.srm_p_value, "mismatch": p < policy.srm_p_value}
    if p < policy.srm_p_value:
        total = sum(counts.values())
        seen = ", ".join(f"{n} {counts[n]} ({counts[n] / total:.2%}, expected {shares[n]:.2%})" for n in names)
        result.status = SRM
        result.reason = (f"sample-ratio mismatch: {unit} per arm {seen}; chi-square {stat:.2f}, p = {p:.2g} < "
                         f"{policy.srm_p_value:g}. The assignment or the prediction log is broken (routing, a server "
                         "that did not log, a filter); no effect estimate can be trusted, so the analysis stops "
                         "here. Find the cause, then restart the test")
        return True
    return False


def _too_few(result: AbAnalysis, policy: AbTestPolicy) -> bool:
    small = [a for a in result.arms if a.units < policy.min_units_per_arm]
    if small:
        result.status = CONTINUE
        result.reason = ("continue: too few matured units to decide: " + ", ".join(
            f"{a.arm} {a.units}" for a in small) + f" (min_units_per_arm {policy.min_units_per_arm})")
        return True
    return False


def _no_outcomes_reason(arm: str, version: str | None, requests: int) -> str:
    return (f"no matured outcome in arm '{arm}' (version {version}): {requests} requests logged, none with an outcome "
            "in the store; check that ingest_feedback landed the outcomes of these days")


def _split(result: AbAnalysis, predictions: pd.DataFrame, outcomes: pd.DataFrame, model: ModelConfig,
           seed: int) -> None:
    import numpy as np

    from evergreen import stats

    policy = model.ab_test
    positive = model.label.positive_class
    versions = {CHAMPION_ARM: str(result.champion_version), CHALLENGER_ARM: str(result.challenger_version)}
    rows, excluded, unassigned_ids = _assignments(predictions, versions)
    labels = _labels_by_request(outcomes)
    labels = labels[labels["label"].notna()]
    rows = rows.merge(labels, on="request_id", how="left")
    rate = policy.metric == OUTCOME_RATE
    # An entity seen in both arms (the share or the experiment id changed mid-test) belongs to neither.
    arms_per_entity = rows.groupby("entity_id")["arm"].nunique()
    crossed = arms_per_entity.index[arms_per_entity > 1]
    if len(crossed):
        excluded["entities_in_both_arms"] = int(len(crossed))
        rows = rows[~rows["entity_id"].isin(crossed)]
    orphaned = _unassigned_outcomes(unassigned_ids, labels)
    if orphaned:
        excluded["outcomes_without_assignment"] = orphaned
    result.excluded = excluded
    labelled = rows[rows["label"].notna()]
    traffic = {a: rows[rows["arm"] == a] for a in (CHAMPION_ARM, CHALLENGER_ARM)}
    matured = {a: labelled[labelled["arm"] == a] for a in (CHAMPION_ARM, CHALLENGER_ARM)}
    window = f"[{result.window_start}, {result.window_end})"
    if labelled.empty and orphaned:
        result.reason = (f"outcomes without assignments: {orphaned} matured outcomes in {window} join predictions "
                         "that carry no arm of this test (" + ", ".join(f"{k} {v}" for k, v in excluded.items()
                                                                      if k != "outcomes_without_assignment")
                         + f"), and none joins an assigned one; the serving app must log arm 'champion' / "
                         f"'challenger' with the version that answered (champion {result.champion_version}, "
                         f"challenger {result.challenger_version})")
        return
    for arm, part in traffic.items():
        if part.empty:
            others = ", ".join(f"{k} {v}" for k, v in excluded.items()) or "none"
            result.reason = (f"no traffic in arm '{arm}': no request in {window} was logged with arm '{arm}' and "
                             f"version {versions[arm]} (rows outside the test: {others}); check the serving app's "
                             f"challenger_share and that it loaded both aliases")
            return
    # The assignment unit is the entity: the ratio check counts entities, labelled or not.
    entities = {a: int(part["entity_id"].nunique()) for a, part in traffic.items()}
    share = policy.challenger_share
    if _srm(result, policy, entities, {CHAMPION_ARM: 1.0 - share, CHALLENGER_ARM: share}, "entities"):
        result.arms = [ArmSummary(a, versions[a], len(traffic[a]), entities[a], len(matured[a]), 0)
                       for a in traffic]
        return
    for arm, part in matured.items():
        if part.empty:
            result.reason = _no_outcomes_reason(arm, versions[arm], len(traffic[arm]))
            return

    confidence = 1.0 - policy.alpha
    y: dict[str, np.ndarray] = {}
    x: dict[str, np.ndarray] = {}
    if rate:
        cls = model.label.positive_class if policy.outcome_class is None else policy.outcome_class
        arms = []
        for a, part in matured.items():
            units = (part["label"] == float(cls)).groupby(part["entity_id"]).max().to_numpy(dtype="float64")
            x[a], y[a] = units, np.zeros(len(units))
            est = stats.proportion_interval(int(units.sum()), len(units), confidence)
            arms.append(ArmSummary(a, versions[a], len(traffic[a]), entities[a], len(part), len(units), est.value,
                                   est.low, est.high, est.method))
        result.arms = arms
        if _too_few(result, policy):
            return
        if all(float(v.min()) == float(v.max()) for v in x.values()) and x[CHAMPION_ARM][0] == x[CHALLENGER_ARM][0]:
            result.reason = (f"zero variance: every one of the {sum(len(v) for v in x.values())} entities in both "
                             f"arms has outcome {int(x[CHAMPION_ARM][0])} for {result.metric}; a difference of 0 "
                             "with no spread cannot be tested -- wait for more outcomes or choose another metric")
            return
        effect = stats.two_sample_difference(x[CHAMPION_ARM], x[CHALLENGER_ARM], confidence)
        if not (effect.se or 0.0) > 0:
            result.reason = (f"zero variance: every entity of arm champion has outcome {int(x[CHAMPION_ARM][0])} "
                             f"and every entity of arm challenger {int(x[CHALLENGER_ARM][0])}; with no spread "
                             "within the arms the difference has no standard error and cannot be tested")
            return
        sd = {a: math.sqrt(max(v.mean() * (1 - v.mean()), 0.0)) for a, v in x.items()}
        metric_fn = stats.mean_metric
    else:
        column = "score" if model.metric in stats.SCORE_METRICS else "prediction"
        arms, ests = [], {}
        for a, part in matured.items():
            vals = np.asarray(part[column], dtype="float64") if column in part else np.full(len(part), np.nan)
            ok = np.isfinite(vals)
            if not ok.all():
                excluded[f"{a}_{column}_missing"] = int((~ok).sum())
            y[a] = (part["label"].to_numpy(dtype="float64")[ok] == float(positive)).astype("float64")
            x[a] = vals[ok] if column == "score" else (vals[ok] == positive).astype("float64")
            if not len(y[a]):
                result.reason = (f"arm '{a}': none of its {len(part)} labelled rows has a usable '{column}'; check "
                                 "the serving app's logging")
                return
            problem = _single_class(y[a], positive, model.metric)
            if problem:
                arms.append(ArmSummary(a, versions[a], len(traffic[a]), entities[a], len(part), len(y[a])))
                result.arms = arms
                result.reason = f"zero variance in arm '{a}': {problem}"
                return
            kind = "score" if column == "score" else "pred"
            est = stats.metric_interval(model.metric, y[a], confidence=confidence, positive=1.0, seed=seed,
                                        draws=policy.bootstrap_draws, **{kind: x[a]})
            ests[a] = est
            arms.append(ArmSummary(a, versions[a], len(traffic[a]), entities[a], len(part), len(y[a]), est.value,
                                   est.low, est.high, est.method))
        result.arms = arms
        if _too_few(result, policy):
            return
        se = math.sqrt(sum((e.se or 0.0) ** 2 for e in ests.values()))
        d = ests[CHALLENGER_ARM].value - ests[CHAMPION_ARM].value
        if not se > 0:
            result.reason = (f"zero variance: {model.metric} has no spread in either arm (standard errors "
                             f"{ests[CHAMPION_ARM].se} and {ests[CHALLENGER_ARM].se}; e.g. constant scores); the "
                             "difference cannot be tested -- check the models' scores")
            return
        z = stats.z_value(confidence)
        effect = stats.Interval(d, d - z * se, d + z * se, sum(len(v) for v in y.values()),
                                f"independent_{ests[CHAMPION_ARM].method}", confidence, se=se,
                                p_value=math.erfc(abs(d) / se / math.sqrt(2.0)))
        sd = {a: (e.se or 0.0) * math.sqrt(len(y[a])) for a, e in ests.items()}
        metric_fn = stats.weighted_metric(model.metric)
    result.effect = _interval_dict(effect)
    units = sum(len(v) for v in x.values())
    if rate or units <= policy.bootstrap_max_units:  # 0/1 units: O(draws) at any size (evergreen.stats)
        boot = stats.bootstrap_two_sample(metric_fn, y[CHAMPION_ARM], x[CHAMPION_ARM], y[CHALLENGER_ARM],
                                          x[CHALLENGER_ARM], draws=policy.bootstrap_draws, seed=seed,
                                          confidence=confidence, positive=1.0)
        result.bootstrap = _interval_dict(boot)
    else:
        result.bootstrap_note = (f"bootstrap skipped: {units} units > bootstrap_max_units "
                                 f"{policy.bootstrap_max_units}; the analytic interval stands alone at this size")
    minimum = stats.minimum_sample_size(sd[CHAMPION_ARM], sd[CHALLENGER_ARM], policy.min_detectable_effect,
                                        confidence=confidence, power=policy.power, share_b=share)
    _finish(result, policy, effect, units, minimum)


def _single_class(y: np.ndarray, positive: Any, metric: str) -> str:
    n_pos = int((y == 1.0).sum())
    if n_pos in (0, len(y)):
        return (f"every one of its {len(y)} labels is {'the positive class' if n_pos else 'negative'}: {metric} on "
                "a single class has no variance (undefined for roc_auc)")
    return ""


def _finish(result: AbAnalysis, policy: AbTestPolicy, effect: Interval, units: int, minimum: int) -> None:
    sign = 1.0 if result.better == "higher" else -1.0
    gain = sign * effect.value
    verdict = judge(policy, gain, float(effect.se or 0.0), units, minimum, result.days)
    result.gain, result.units, result.minimum_units = gain, units, minimum
    result.sequential = {**verdict.sequence.to_dict(), "tuning": policy.sequential_tuning,
                         "of": f"gain = {'+' if sign > 0 else '-'}(challenger - champion)"}
    result.status, result.stop_status = verdict.status, verdict.stop_status
    arms = {a.arm: a for a in result.arms}
    values = ", ".join(f"{a} {arms[a].value:.4f}" for a in arms if arms[a].value is not None)
    result.reason = (f"{result.metric} ({result.better} is better): {values}; challenger - champion "
                     f"{_fmt(effect.value)} [{_fmt(effect.low)}, {_fmt(effect.high)}] ({effect.method}); "
                     f"{verdict.reason}")


def _shadow(result: AbAnalysis, predictions: pd.DataFrame, outcomes: pd.DataFrame, model: ModelConfig,
            seed: int) -> None:
    import numpy as np

    from evergreen import stats

    policy = model.ab_test
    positive = model.label.positive_class
    versions = {CHAMPION_ARM: str(result.champion_version), SHADOW_ARM: str(result.challenger_version)}
    rows, excluded, unassigned_ids = _assignments(predictions, versions)
    column = "score" if model.metric in stats.SCORE_METRICS else "prediction"
    champ = rows[rows["arm"] == CHAMPION_ARM]
    shad = rows[rows["arm"] == SHADOW_ARM]
    window = f"[{result.window_start}, {result.window_end})"
    labels = _labels_by_request(outcomes)
    labels = labels[labels["label"].notna()]
    orphaned = _unassigned_outcomes(unassigned_ids, labels, strip_shadow=True)
    if orphaned:
        excluded["outcomes_without_assignment"] = orphaned
    result.excluded = excluded
    if champ.empty and shad.empty and orphaned:
        result.reason = (f"outcomes without assignments: {orphaned} matured outcomes in {window} join predictions "
                         f"that carry no arm of this test; in shadow mode the serving app logs arm 'champion' "
                         f"(version {result.champion_version}) and arm 'shadow' (version "
                         f"{result.challenger_version}) for every request")
        return
    for arm, part in ((CHAMPION_ARM, champ), (SHADOW_ARM, shad)):
        if part.empty:
            others = ", ".join(f"{k} {v}" for k, v in excluded.items()) or "none"
            result.reason = (f"no traffic in arm '{arm}': no request in {window} was logged with arm '{arm}' and "
                             f"version {versions[arm]} (rows outside the test: {others}); in shadow mode every "
                             "request is logged twice, once per model")
            return
    base = shad["request_id"].str.slice(stop=-len(SHADOW_SUFFIX)).where(shad["request_id"].str.endswith(
        SHADOW_SUFFIX))
    shad = shad.assign(request_id=base.to_numpy())
    bad_ids = int(shad["request_id"].isna().sum())
    if bad_ids:
        excluded["shadow_id_malformed"] = bad_ids
        shad = shad[shad["request_id"].notna()]
    if _srm(result, policy, {CHAMPION_ARM: len(champ), SHADOW_ARM: len(shad)},
            {CHAMPION_ARM: 0.5, SHADOW_ARM: 0.5}, "requests (every request is logged once per model)"):
        result.arms = [ArmSummary(a, versions[a], len(p), int(p["entity_id"].nunique()), 0, 0)
                       for a, p in ((CHAMPION_ARM, champ), (SHADOW_ARM, shad))]
        return
    pairs = champ[["request_id", "entity_id", column]].merge(
        shad[["request_id", column]], on="request_id", how="inner", suffixes=("_a", "_b"))
    unpaired = len(champ) + len(shad) - 2 * len(pairs)
    if unpaired:
        excluded["unpaired_rows"] = unpaired
    pairs = pairs.merge(labels, on="request_id", how="inner")
    a_vals = pairs[f"{column}_a"].to_numpy(dtype="float64")
    b_vals = pairs[f"{column}_b"].to_numpy(dtype="float64")
    ok = np.isfinite(a_vals) & np.isfinite(b_vals)
    if not ok.all():
        excluded[f"{column}_missing"] = int((~ok).sum())
    y = (pairs["label"].to_numpy(dtype="float64")[ok] == float(positive)).astype("float64")
    a_vals, b_vals = a_vals[ok], b_vals[ok]
    n = len(y)
    labelled = {CHAMPION_ARM: n, SHADOW_ARM: n}
    result.arms = [ArmSummary(a, versions[a], len(p), int(p["entity_id"].nunique()), labelled[a], n)
                   for a, p in ((CHAMPION_ARM, champ), (SHADOW_ARM, shad))]
    if n == 0:
        result.reason = (f"no matured outcome joins a pair of rows (champion and shadow) in {window}: "
                         f"{len(champ)} champion and {len(shad)} shadow rows; check that ingest_feedback landed the "
                         "outcomes of these days")
        return
    if _too_few(result, policy):
        return
    problem = _single_class(y, 1.0, model.metric)
    if problem:
        result.reason = f"zero variance: the paired rows: {problem}"
        return
    confidence = 1.0 - policy.alpha
    if column == "prediction":
        a_vals, b_vals = (a_vals == positive).astype("float64"), (b_vals == positive).astype("float64")
        kw = {"pred_a": a_vals, "pred_b": b_vals}
    else:
        kw = {"score_a": a_vals, "score_b": b_vals}
    paired = stats.paired_difference(model.metric, y, confidence=confidence, positive=1.0, seed=seed,
                                     draws=policy.bootstrap_draws, **kw)
    result.arms = [ArmSummary(a, versions[a], len(p), int(p["entity_id"].nunique()), n, n, e.value, e.low, e.high,
                              e.method)
                   for a, p, e in ((CHAMPION_ARM, champ, paired.a), (SHADOW_ARM, shad, paired.b))]
    effect = paired.difference
    if not (effect.se or 0.0) > 0:
        result.reason = (f"zero variance: the paired difference of {model.metric} has no spread over {n} requests "
                         "(the two models rank them identically, or constant scores); it cannot be tested")
        return
    result.effect = _interval_dict(effect)
    if n <= policy.bootstrap_max_units:
        boot = stats.bootstrap_paired(stats.weighted_metric(model.metric), y, a_vals, b_vals,
                                      draws=policy.bootstrap_draws, seed=seed, confidence=confidence, positive=1.0,
                                      metric=model.metric)
        result.bootstrap = _interval_dict(boot.difference)
    else:
        result.bootstrap_note = (f"bootstrap skipped: {n} pairs > bootstrap_max_units {policy.bootstrap_max_units}; "
                                 "the analytic interval stands alone at this size")
    minimum = paired_minimum_units(float(effect.se) * math.sqrt(n), policy.min_detectable_effect, confidence,
                                   policy.power)
    _finish(result, policy, effect, n, minimum)
