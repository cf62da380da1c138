"""The promotion gate: a pure decision from typed facts about a candidate version (and the champion) and the
model's ``gate:`` policy (:class:`~evergreen.promote.policy.GatePolicy`). No MLflow, no Airflow: the task body
gathers :class:`GateFacts` (registry tags, the holdout scored by both models, the infrastructure check) and calls
:func:`decide`, which returns a :class:`~evergreen.promote.report.GateReport` listing every check.

Checks (all of them run and are listed; any ``fail`` rejects, a ``skip`` never decides):

* ``candidate`` -- the candidate is not already the champion;
* ``metric`` -- the candidate has its holdout metric (``model.metric``);
* ``floor:<metric>`` -- each absolute floor (a ceiling for ``log_loss``), on the value or on the interval's
  pessimistic end (``floor_on``);
* ``infra:load``, ``infra:signature``, ``infra:latency`` -- the version loads through the platform's skops loader,
  its signature matches the model config, it scores ``latency_sample_rows`` rows within ``latency_budget_ms``;
* with a champion: ``holdout_unseen`` -- from the versions' window tags, the candidate's holdout (the last
  ``holdout_days`` of its window) shares no day with the champion's training days ``[start, holdout start)``, so
  no model is scored on days it trained on; ``holdout_size`` -- at least ``min_holdout_rows`` paired rows;
  ``comparison`` -- the paired interval (DeLong for ROC AUC, :func:`evergreen.stats.paired_difference`) of the gain
  = candidate - champion (sign-flipped where lower is better) at ``confidence``; ``slice:<feature>=<value>`` --
  no configured slice with ``slice_min_rows`` rows loses more than ``slice_tolerance``;
* without a champion: ``first_model`` -- ``floors_only`` needs at least one floor (all passed),
  ``approval_required`` passes and asks for a person.

The comparison's level, from the gain's interval ``[low, high]``: **superior** when ``low > superiority_margin``,
**non-inferior** when ``low > -margin`` (and not superior), **inferior** otherwise. Decision table (every other check
passed; a first model that passes is promoted):

=================  ================  ==========  ===============  ========
``mode``           ``ab_test_when``  superior    non-inferior     inferior
=================  ================  ==========  ===============  ========
non_inferiority    not_superior      promote     ab_test          reject
non_inferiority    never             promote     promote          reject
non_inferiority    always            ab_test     ab_test          reject
superiority        never, not_sup.   promote     reject           reject
superiority        always            ab_test     reject           reject
=================  ================  ==========  ===============  ========

The default (``non_inferiority`` + ``not_superior``) promotes only on evidence of improvement and lets live traffic
decide a candidate that is merely no worse. ``approval`` then marks which outcomes wait for a person: ``never``,
``always`` (promote and ab_test), ``on_promote``, ``on_ab_test``; ``first_model: approval_required`` always does.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evergreen import stats
from evergreen.promote.policy import GatePolicy
from evergreen.promote.report import AB_TEST, FAIL, PASS, PROMOTE, REJECT, SKIP, Check, GateReport
from evergreen.stats import Interval, PairedEstimate
from evergreen.tracking import TRAINING_WINDOW_TAG, parse_window_tag

__all__ = ["Comparison", "GateFacts", "GatePolicy", "GateReport", "InfraFacts", "SliceFacts", "VersionFacts",
           "decide", "slice_facts", "AB_TEST", "PROMOTE", "REJECT"]


@dataclass(frozen=True)
class VersionFacts:
    """A registered version as the gate sees it: its window tag, holdout length and holdout metrics."""

    version: str
    window_tag: str | None = None  # evergreen.training_window: 'YYYY-MM-DD/YYYY-MM-DD', end exclusive
    holdout_days: int | None = None
    metrics: Mapping[str, Interval | float] = field(default_factory=dict)

    def windows(self) -> tuple[dt.date, dt.date, dt.date]:
        """``(start, holdout_start, end)``: trained on ``[start, holdout_start)``, held out ``[holdout_start, end)``."""
        if not self.window_tag:
            raise ValueError(f"version {self.version} has no tag {TRAINING_WINDOW_TAG}")
        try:
            start, end = parse_window_tag(self.window_tag)
        except ValueError as exc:
            raise ValueError(f"version {self.version}: {exc}") from None
        days = self.holdout_days
        if not isinstance(days, int) or not 0 < days < (end - start).days:
            raise ValueError(f"version {self.version}: holdout_days={days!r} does not fit its window "
                             f"{self.window_tag} (expected 1 to {(end - start).days - 1} days)")
        return start, end - dt.timedelta(days=days), end


@dataclass(frozen=True)
class Comparison:
    """The champion (``a``) and the candidate (``b``) scored on the candidate's holdout rows: the arrays, or a
    :class:`~evergreen.stats.PairedEstimate` computed elsewhere (it must be at the policy's confidence)."""

    y: Any = None
    champion_score: Any = None
    candidate_score: Any = None
    champion_pred: Any = None
    candidate_pred: Any = None
    positive: Any = 1
    seed: int = stats.DEFAULT_SEED
    paired: PairedEstimate | None = None

    def estimate(self, metric: str, confidence: float) -> PairedEstimate:
        if self.paired is not None:
            return self.paired
        if self.y is None:
            raise ValueError("no holdout rows were scored by both models")
        return stats.paired_difference(metric, self.y, self.champion_score, self.candidate_score,
                                       pred_a=self.champion_pred, pred_b=self.candidate_pred, confidence=confidence,
                                       positive=self.positive, seed=self.seed)


@dataclass(frozen=True)
class SliceFacts:
    feature: str
    value: str
    rows: int
    champion: float | None  # None: the slice cannot be scored (e.g. one class only)
    candidate: float | None


@dataclass(frozen=True)
class InfraFacts:
    """What the task saw loading the candidate through ``evergreen.train.modelio`` and scoring a sample."""

    loaded: bool
    load_error: str = ""
    signature_ok: bool = False
    signature_problem: str = ""
    scored_rows: int = 0
    latency_ms: float | None = None
    score_error: str = ""


@dataclass(frozen=True)
class GateFacts:
    model: str
    metric: str
    candidate: VersionFacts
    champion: VersionFacts | None = None
    comparison: Comparison | None = None
    slices: Sequence[SliceFacts] = ()
    infra: InfraFacts | None = None


def slice_facts(metric: str, comparison: Comparison, masks: Mapping[tuple[str, str], Any]) -> list[SliceFacts]:
    """Both models' metric on each slice ``(feature, value) -> row mask`` of the comparison's rows."""
    import numpy as np

    def score(mask: Any, which: str) -> float | None:
        score, pred = (getattr(comparison, f"{which}_{kind}") for kind in ("score", "pred"))
        try:
            return stats.metric_value(metric, np.asarray(comparison.y)[mask],
                                      None if score is None else np.asarray(score)[mask],
                                      None if pred is None else np.asarray(pred)[mask], positive=comparison.positive)
        except ValueError:  # one class only, or empty: the slice cannot be scored
            return None

    out = []
    for (feature, value), mask in sorted(masks.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        m = np.asarray(mask, dtype=bool)
        out.append(SliceFacts(feature, str(value), int(m.sum()), score(m, "champion"), score(m, "candidate")))
    return out


def _fmt(x: float) -> str:
    return f"{x:+.4f}"


def _floors(policy: GatePolicy, facts: GateFacts) -> list[Check]:
    if not policy.floors:
        return [Check("floors", SKIP, "no floors configured (gate.floors)")]
    checks = []
    for metric, floor in sorted(policy.floors.items()):
        name, est = f"floor:{metric}", facts.candidate.metrics.get(metric)
        greater = stats.greater_is_better(metric)
        if est is None:
            checks.append(Check(name, FAIL, f"the candidate has no holdout {metric} to hold against the floor {floor}"))
            continue
        if policy.floor_on == "bound":
            if not isinstance(est, Interval):
                checks.append(Check(name, FAIL, f"floor_on=bound needs the interval of {metric}; only its value "
                                                "is known"))
                continue
            x, what = (est.low if greater else est.high), "pessimistic interval end"
        else:
            x, what = float(est.value if isinstance(est, Interval) else est), "value"
        ok = math.isfinite(x) and (x >= floor if greater else x <= floor)
        sign = ">=" if greater else "<="
        checks.append(Check(name, PASS if ok else FAIL, f"{metric} {what} {x:.4f} {sign if ok else 'misses'} "
                                                        f"{'floor' if greater else 'ceiling'} {floor}",
                            {"value": x, "floor": floor, "on": policy.floor_on}))
    return checks


def _infra(policy: GatePolicy, infra: InfraFacts | None) -> list[Check]:
    if infra is None:
        return [Check("infra", FAIL, "the infrastructure check did not run: load, signature and latency are unknown")]
    if not infra.loaded:
        reason = "not loaded, so not checked"
        return [Check("infra:load", FAIL, f"the version does not load through the platform's skops loader: "
                                          f"{infra.load_error or 'no error recorded'}"),
                Check("infra:signature", SKIP, reason), Check("infra:latency", SKIP, reason)]
    checks = [Check("infra:load", PASS, "loads through the platform's skops loader"),
              Check("infra:signature", PASS if infra.signature_ok else FAIL,
                    "signature matches the model config" if infra.signature_ok
                    else f"signature does not match the model config: {infra.signature_problem or 'no detail'}")]
    budget, want = policy.latency_budget_ms, policy.latency_sample_rows
    numbers = {"latency_ms": infra.latency_ms, "budget_ms": budget, "rows": infra.scored_rows}
    if infra.score_error:
        checks.append(Check("infra:latency", FAIL, f"scoring the sample failed: {infra.score_error}", numbers))
    elif infra.latency_ms is None or infra.scored_rows < want:
        checks.append(Check("infra:latency", FAIL, f"scored {infra.scored_rows} of the {want} sample rows the policy "
                                                   "asks for; latency not measured", numbers))
    else:
        ok = infra.latency_ms <= budget
        checks.append(Check("infra:latency", PASS if ok else FAIL, f"{infra.scored_rows} rows in "
                            f"{infra.latency_ms:.1f} ms ({'within' if ok else 'over'} the {budget:g} ms budget)",
                            numbers))
    return checks


def _unseen(facts: GateFacts) -> Check:
    try:
        c_start, c_hold, c_end = facts.candidate.windows()
        h_start, h_hold, h_end = facts.champion.windows()
    except ValueError as exc:
        return Check("holdout_unseen", FAIL, f"cannot show the holdout is unseen by the champion: {exc}")
    numbers = {"candidate_holdout": f"{c_hold}/{c_end}", "champion_training": f"{h_start}/{h_hold}"}
    if c_hold < h_hold and c_end > h_start:
        return Check("holdout_unseen", FAIL,
                     f"the candidate's holdout [{c_hold}, {c_end}) overlaps champion version "
                     f"{facts.champion.version}'s training days [{h_start}, {h_hold}): the champion would be scored "
                     "on days it trained on",
                     numbers)
    return Check("holdout_unseen", PASS, f"the candidate's holdout [{c_hold}, {c_end}) is outside the champion's "
                                         f"training days [{h_start}, {h_hold})", numbers)


def _compare(policy: GatePolicy, facts: GateFacts,
             blocked: bool) -> tuple[list[Check], str | None, PairedEstimate | None]:
    """``(checks, level, paired)``: the holdout size and comparison checks, the level reached (or None)."""
    metric = facts.metric
    if facts.comparison is None:
        return [Check("comparison", FAIL, "no paired comparison: the champion was not scored on the candidate's "
                                          "holdout")], None, None
    try:
        paired = facts.comparison.estimate(metric, policy.confidence)
    except ValueError as exc:
        return [Check("comparison", FAIL, f"the paired comparison cannot be computed: {exc}")], None, None
    d = paired.difference
    rows = int(d.n)
    size = Check("holdout_size", PASS if rows >= policy.min_holdout_rows else FAIL,
                 f"{rows} paired holdout rows ({'at least' if rows >= policy.min_holdout_rows else 'fewer than'} "
                 f"min_holdout_rows={policy.min_holdout_rows})", {"rows": rows, "min": policy.min_holdout_rows})
    if blocked or size.verdict == FAIL:
        return [size, Check("comparison", SKIP, "not judged: see the holdout checks")], None, paired
    if paired.metric != metric:
        return [size, Check("comparison", FAIL, f"the paired comparison is of {paired.metric}; the model's metric is "
                                                f"{metric}")], None, paired
    if d.confidence != policy.confidence:
        return [size, Check("comparison", FAIL, f"the paired interval was computed at confidence {d.confidence}; the "
                                                f"policy asks for {policy.confidence}")], None, paired
    if not (math.isfinite(d.low) and math.isfinite(d.high)):
        undefined = Check("comparison", FAIL, "the paired interval is undefined (too few rows of a class)")
        return [size, undefined], None, paired
    greater = stats.greater_is_better(metric)
    gain, low, high = (d.value, d.low, d.high) if greater else (-d.value, -d.high, -d.low)
    if low > policy.superiority_margin:
        level = "superior"
    elif low > -policy.margin:
        level = "non_inferior"
    else:
        level = "inferior"
    passed = level == "superior" or (level == "non_inferior" and policy.mode == "non_inferiority")
    p = "" if d.p_value is None else f", p={d.p_value:.3g}"
    reason = (f"{metric} {paired.b.value:.4f} vs champion {paired.a.value:.4f}: gain {_fmt(gain)} "
              f"[{_fmt(low)}, {_fmt(high)}] ({d.method}, {policy.confidence:g}{p}) is {level.replace('_', '-')} "
              f"(margin {policy.margin:g}, superiority margin {policy.superiority_margin:g}); mode {policy.mode}")
    numbers = {"champion": paired.a.value, "candidate": paired.b.value, "gain": gain, "low": low, "high": high,
               "p_value": d.p_value, "method": d.method, "level": level}
    return [size, Check("comparison", PASS if passed else FAIL, reason, numbers)], level, paired


def _slices(policy: GatePolicy, facts: GateFacts) -> list[Check]:
    sign = 1.0 if stats.greater_is_better(facts.metric) else -1.0
    checks = []
    for feature in policy.slices:
        found = [s for s in facts.slices if s.feature == feature]
        if not found:
            checks.append(Check(f"slice:{feature}", FAIL, f"no slice results for configured feature '{feature}'"))
        for s in found:
            name, numbers = f"slice:{feature}={s.value}", {"rows": s.rows, "champion": s.champion,
                                                           "candidate": s.candidate}
            if s.rows < policy.slice_min_rows:
                checks.append(Check(name, SKIP, f"{s.rows} rows, fewer than slice_min_rows={policy.slice_min_rows}",
                                    numbers))
            elif s.champion is None or s.candidate is None:
                checks.append(Check(name, SKIP, "cannot be scored (one class only)", numbers))
            else:
                gain = sign * (s.candidate - s.champion)
                ok = gain >= -policy.slice_tolerance
                checks.append(Check(name, PASS if ok else FAIL, f"gain {_fmt(gain)} on {s.rows} rows "
                                    f"({'within' if ok else 'beyond'} tolerance {policy.slice_tolerance:g})",
                                    {**numbers, "gain": gain}))
    return checks


def decide(policy: GatePolicy, facts: GateFacts) -> GateReport:
    """Run every check and decide ``reject``, ``ab_test`` or ``promote`` by the module's decision table."""
    metric, cand, champ = facts.metric, facts.candidate, facts.champion
    stats.greater_is_better(metric)  # an unknown metric is a bug in the caller: ValueError naming it
    checks = [Check("candidate", FAIL, f"version {cand.version} is already the champion")
              if champ is not None and str(champ.version) == str(cand.version)
              else Check("candidate", PASS, f"version {cand.version}")]
    est = cand.metrics.get(metric)
    value = None if est is None else float(est.value if isinstance(est, Interval) else est)
    checks.append(Check("metric", PASS, f"holdout {metric} {value:.4f}", {"value": value})
                  if value is not None and math.isfinite(value)
                  else Check("metric", FAIL, f"version {cand.version} has no holdout {metric}; its training run must "
                                             "log it (tag evergreen.metric.<metric>)"))
    checks += _floors(policy, facts)
    checks += _infra(policy, facts.infra)
    level, paired = None, None
    if champ is None:
        if policy.first_model == "approval_required":
            checks.append(Check("first_model", PASS, "no champion: first_model=approval_required, a person decides"))
        elif policy.floors:
            checks.append(Check("first_model", PASS, "no champion: first_model=floors_only, promoted on its floors"))
        else:
            checks.append(Check("first_model", FAIL, "no champion and first_model=floors_only, but gate.floors is "
                                                     "empty, so nothing would stop a bad first model; set "
                                                     f"gate.floors.{metric} or first_model: approval_required"))
    else:
        unseen = _unseen(facts)
        compared, level, paired = _compare(policy, facts, blocked=unseen.verdict == FAIL)
        checks += [unseen, *compared, *_slices(policy, facts)]
    failed = [c for c in checks if c.verdict == FAIL]
    if failed:
        outcome = REJECT
        reason = "; ".join(f"{c.name}: {c.reason}" for c in failed)
    elif champ is None:
        outcome, reason = PROMOTE, next(c.reason for c in checks if c.name == "first_model")
    else:
        direct = policy.ab_test_when == "never" or (policy.ab_test_when == "not_superior" and level == "superior")
        outcome = PROMOTE if direct else AB_TEST
        reason = next(c.reason for c in checks if c.name == "comparison")
    approval = outcome != REJECT and (
        (champ is None and policy.first_model == "approval_required") or policy.approval == "always"
        or policy.approval == f"on_{outcome}")
    return GateReport(
        model=facts.model, metric=metric, candidate_version=str(cand.version),
        champion_version=None if champ is None else str(champ.version), outcome=outcome, reason=reason,
        approval_required=approval, confidence=policy.confidence, policy=policy.to_dict(), checks=tuple(checks),
        comparison=None if paired is None else paired.to_dict(),
    )
