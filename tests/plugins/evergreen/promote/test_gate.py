"""The promotion gate (pure): every branch of the decision, the typed policy's validation, the report's renderings."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from evergreen.config import ConfigError
from evergreen.promote.gate import (
    AB_TEST,
    PROMOTE,
    REJECT,
    Comparison,
    GateFacts,
    GatePolicy,
    InfraFacts,
    SliceFacts,
    VersionFacts,
    decide,
    slice_facts,
)
from evergreen.promote.report import FAIL, PASS, SKIP, GateReport
from evergreen.stats import Interval, PairedEstimate

# champion: trained on [10-01, 10-24), holdout [10-24, 10-31); candidate: holdout [11-07, 11-14)
CHAMPION = VersionFacts("3", "2026-10-01/2026-10-31", 7, {"roc_auc": 0.80})
CANDIDATE = VersionFacts("4", "2026-10-15/2026-11-14", 7,
                         {"roc_auc": Interval(0.82, 0.80, 0.84, 2000, "delong", 0.95)})
INFRA = InfraFacts(loaded=True, signature_ok=True, scored_rows=100, latency_ms=40.0)
POLICY = GatePolicy(floors={"roc_auc": 0.6})


def paired(low: float, high: float, *, n: int = 2000, a: float = 0.80, metric: str = "roc_auc",
           confidence: float = 0.95) -> Comparison:
    d = Interval((low + high) / 2, low, high, n, "delong_paired", confidence, p_value=0.04)
    one = Interval(a, a - 0.01, a + 0.01, n, "delong", confidence)
    return Comparison(paired=PairedEstimate(metric, one, dataclasses.replace(one, value=a + d.value), d))


SUPERIOR, NON_INFERIOR, INFERIOR = paired(0.004, 0.03), paired(-0.005, 0.02), paired(-0.04, -0.012)


def facts(**change) -> GateFacts:
    base = dict(model="churn", metric="roc_auc", candidate=CANDIDATE, champion=CHAMPION, comparison=SUPERIOR,
                infra=INFRA)
    return GateFacts(**{**base, **change})


def verdicts(report: GateReport) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checks}


def test_superior_candidate_is_promoted_and_every_check_is_listed():
    report = decide(POLICY, facts())
    assert report.outcome == PROMOTE and not report.approval_required
    assert verdicts(report) == {"candidate": PASS, "metric": PASS, "floor:roc_auc": PASS, "infra:load": PASS,
                                "infra:signature": PASS, "infra:latency": PASS, "holdout_unseen": PASS,
                                "holdout_size": PASS, "comparison": PASS}
    comparison = report.check("comparison")
    assert comparison.numbers["level"] == "superior" and comparison.numbers["low"] == 0.004
    assert "gain +0.0170 [+0.0040, +0.0300]" in report.reason and "superior" in report.reason
    assert report.comparison["difference"]["method"] == "delong_paired"


@pytest.mark.parametrize(
    "mode, ab_test_when, expected",  # expected outcome for superior, non-inferior, inferior
    [
        ("non_inferiority", "not_superior", (PROMOTE, AB_TEST, REJECT)),
        ("non_inferiority", "never", (PROMOTE, PROMOTE, REJECT)),
        ("non_inferiority", "always", (AB_TEST, AB_TEST, REJECT)),
        ("superiority", "never", (PROMOTE, REJECT, REJECT)),
        ("superiority", "not_superior", (PROMOTE, REJECT, REJECT)),
        ("superiority", "always", (AB_TEST, REJECT, REJECT)),
    ],
)
def test_decision_table(mode, ab_test_when, expected):
    policy = dataclasses.replace(POLICY, mode=mode, ab_test_when=ab_test_when)
    got = tuple(decide(policy, facts(comparison=c)).outcome for c in (SUPERIOR, NON_INFERIOR, INFERIOR))
    assert got == expected


def test_margins_set_the_levels():
    assert decide(POLICY, facts(comparison=NON_INFERIOR)).check("comparison").numbers["level"] == "non_inferior"
    strict = dataclasses.replace(POLICY, margin=0.004)  # -0.005 is now beyond the margin
    report = decide(strict, facts(comparison=NON_INFERIOR))
    assert report.outcome == REJECT and "inferior" in report.check("comparison").reason
    demanding = dataclasses.replace(POLICY, superiority_margin=0.01)  # low end 0.004 no longer clears it
    assert decide(demanding, facts()).outcome == AB_TEST


def test_lower_is_better_metric_flips_the_gain_and_the_floor():
    ll = dict(metric="log_loss", candidate=dataclasses.replace(CANDIDATE, metrics={"log_loss": 0.40}))
    better = paired(-0.03, -0.004, metric="log_loss", a=0.45)  # candidate's loss is lower: a gain
    policy = GatePolicy(floors={"log_loss": 0.5})
    report = decide(policy, facts(comparison=better, **ll))
    assert report.outcome == PROMOTE and report.check("comparison").numbers["low"] == pytest.approx(0.004)
    assert decide(GatePolicy(floors={"log_loss": 0.3}), facts(comparison=better, **ll)).outcome == REJECT


def test_floor_failure_rejects():
    report = decide(GatePolicy(floors={"roc_auc": 0.9}), facts())
    assert report.outcome == REJECT and verdicts(report)["floor:roc_auc"] == FAIL
    assert "floor:roc_auc: roc_auc value 0.8200 misses floor 0.9" in report.reason


def test_floor_on_the_interval_bound():
    policy = GatePolicy(floors={"roc_auc": 0.81}, floor_on="bound")
    assert decide(policy, facts()).check("floor:roc_auc").verdict == FAIL  # low end 0.80 < 0.81
    plain = facts(candidate=dataclasses.replace(CANDIDATE, metrics={"roc_auc": 0.95}))
    assert "needs the interval" in decide(policy, plain).check("floor:roc_auc").reason
    floored_elsewhere = decide(GatePolicy(floors={"accuracy": 0.7}), facts())
    assert floored_elsewhere.check("floor:accuracy").verdict == FAIL  # the candidate has no holdout accuracy


def test_missing_metric_rejects():
    report = decide(POLICY, facts(candidate=dataclasses.replace(CANDIDATE, metrics={})))
    assert report.outcome == REJECT and verdicts(report)["metric"] == FAIL
    assert "version 4 has no holdout roc_auc" in report.reason


def test_a_holdout_the_champion_trained_on_is_refused():
    # candidate holdout [10-15, 10-20) lies inside the champion's training days [10-01, 10-24)
    overlapping = dataclasses.replace(CANDIDATE, window_tag="2026-10-01/2026-10-20", holdout_days=5)
    report = decide(POLICY, facts(candidate=overlapping))
    assert report.outcome == REJECT
    assert verdicts(report)["holdout_unseen"] == FAIL and verdicts(report)["comparison"] == SKIP
    assert ("holdout [2026-10-15, 2026-10-20) overlaps champion version 3's training days [2026-10-01, 2026-10-24)"
            in report.reason)
    # the champion's own holdout days are fair game: it never trained on them
    adjacent = dataclasses.replace(CANDIDATE, window_tag="2026-10-10/2026-10-31", holdout_days=7)
    assert decide(POLICY, facts(candidate=adjacent)).outcome == PROMOTE


@pytest.mark.parametrize(
    "candidate, message",
    [
        (dataclasses.replace(CANDIDATE, window_tag=None), "version 4 has no tag evergreen.training_window"),
        (dataclasses.replace(CANDIDATE, window_tag="last month"), "is not 'YYYY-MM-DD/YYYY-MM-DD'"),
        (dataclasses.replace(CANDIDATE, holdout_days=None), "holdout_days=None does not fit"),
        (dataclasses.replace(CANDIDATE, holdout_days=30), "holdout_days=30 does not fit"),
    ],
)
def test_unknown_windows_cannot_show_the_holdout_is_unseen(candidate, message):
    report = decide(POLICY, facts(candidate=candidate))
    assert report.outcome == REJECT and message in report.check("holdout_unseen").reason


def test_too_small_a_holdout_rejects():
    report = decide(GatePolicy(floors={"roc_auc": 0.6}, min_holdout_rows=5000), facts())
    assert report.outcome == REJECT and verdicts(report)["holdout_size"] == FAIL
    assert "2000 paired holdout rows (fewer than min_holdout_rows=5000)" in report.reason


def test_comparison_problems_reject():
    assert "no paired comparison" in decide(POLICY, facts(comparison=None)).reason
    other = paired(0.004, 0.03, confidence=0.9)
    assert "computed at confidence 0.9" in decide(POLICY, facts(comparison=other)).reason
    wrong_metric = paired(0.004, 0.03, metric="accuracy")
    assert "the paired comparison is of accuracy" in decide(POLICY, facts(comparison=wrong_metric)).reason
    single_class = Comparison(y=np.ones(600), champion_score=np.linspace(0, 1, 600), candidate_score=np.ones(600))
    assert "cannot be computed: roc_auc needs both classes" in decide(POLICY, facts(comparison=single_class)).reason


def test_paired_delong_from_the_holdout_arrays():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    champion = y * 0.8 + rng.normal(size=3000)
    candidate = y * 1.2 + rng.normal(size=3000)
    report = decide(POLICY, facts(comparison=Comparison(y=y, champion_score=champion, candidate_score=candidate)))
    assert report.outcome == PROMOTE
    numbers = report.check("comparison").numbers
    assert numbers["method"] == "delong_paired" and numbers["low"] > 0 and numbers["p_value"] < 1e-6
    assert report.comparison["difference"]["n"] == 3000


def test_slice_regression_rejects_and_small_slices_are_skipped():
    policy = dataclasses.replace(POLICY, slices=("plan",), slice_tolerance=0.02, slice_min_rows=200)
    slices = [SliceFacts("plan", "basic", 900, 0.80, 0.75), SliceFacts("plan", "premium", 150, 0.80, 0.50),
              SliceFacts("plan", "standard", 900, 0.80, 0.79), SliceFacts("region", "north", 900, 0.8, 0.1)]
    report = decide(policy, facts(slices=slices))
    v = verdicts(report)
    assert report.outcome == REJECT
    assert (v["slice:plan=basic"], v["slice:plan=premium"], v["slice:plan=standard"]) == (FAIL, SKIP, PASS)
    assert "slice:region=north" not in v  # not a configured slice
    assert "gain -0.0500 on 900 rows (beyond tolerance 0.02)" in report.reason
    fine = decide(policy, facts(slices=slices[1:3]))
    assert fine.outcome == PROMOTE
    missing = decide(policy, facts(slices=[]))
    assert missing.outcome == REJECT and "no slice results for configured feature 'plan'" in missing.reason
    unscorable = decide(policy, facts(slices=[SliceFacts("plan", "basic", 900, None, 0.7)]))
    assert unscorable.check("slice:plan=basic").verdict == SKIP


def test_slice_facts_scores_both_models_on_each_mask():
    y = np.array([1, 0, 1, 0, 1, 1])
    comparison = Comparison(y=y, champion_score=np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.6]),
                            candidate_score=np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.6]))
    plan = np.array(["a", "a", "a", "a", "b", "b"])
    got = slice_facts("roc_auc", comparison, {("plan", "a"): plan == "a", ("plan", "b"): plan == "b"})
    assert got == [SliceFacts("plan", "a", 4, 0.75, 1.0), SliceFacts("plan", "b", 2, None, None)]


def test_first_model_policies():
    first = facts(champion=None, comparison=None)
    report = decide(POLICY, first)
    assert report.outcome == PROMOTE and not report.approval_required and report.champion_version is None
    assert verdicts(report)["first_model"] == PASS and "holdout_unseen" not in verdicts(report)
    approval = decide(dataclasses.replace(POLICY, first_model="approval_required"), first)
    assert approval.outcome == PROMOTE and approval.approval_required
    no_floors = decide(GatePolicy(), first)
    assert no_floors.outcome == REJECT and "gate.floors is empty" in no_floors.reason
    assert decide(GatePolicy(first_model="approval_required"), first).outcome == PROMOTE
    assert decide(GatePolicy(floors={"roc_auc": 0.9}), first).outcome == REJECT  # floors still apply


@pytest.mark.parametrize(
    "infra, check, message",
    [
        (None, "infra", "did not run"),
        (InfraFacts(loaded=False, load_error="not a skops model file"), "infra:load", "not a skops model file"),
        (dataclasses.replace(INFRA, signature_ok=False, signature_problem="column 'plan' missing"), "infra:signature",
         "column 'plan' missing"),
        (dataclasses.replace(INFRA, latency_ms=900.0), "infra:latency", "100 rows in 900.0 ms (over the 500 ms"),
        (dataclasses.replace(INFRA, scored_rows=10), "infra:latency", "scored 10 of the 100 sample rows"),
        (dataclasses.replace(INFRA, score_error="predict_proba failed"), "infra:latency", "predict_proba failed"),
    ],
)
def test_infrastructure_failures_reject(infra, check, message):
    report = decide(POLICY, facts(infra=infra))
    assert report.outcome == REJECT and report.check(check).verdict == FAIL and message in report.reason
    if infra is not None and not infra.loaded:
        assert verdicts(report)["infra:signature"] == verdicts(report)["infra:latency"] == SKIP


def test_the_champion_itself_is_not_a_candidate():
    report = decide(POLICY, facts(candidate=dataclasses.replace(CANDIDATE, version="3")))
    assert report.outcome == REJECT and "version 3 is already the champion" in report.reason


@pytest.mark.parametrize(
    "approval, comparison, required",
    [("never", SUPERIOR, False), ("always", SUPERIOR, True), ("always", INFERIOR, False),
     ("on_promote", SUPERIOR, True), ("on_promote", NON_INFERIOR, False), ("on_ab_test", NON_INFERIOR, True),
     ("on_ab_test", SUPERIOR, False)],
)
def test_approval_marks_the_outcomes_that_wait_for_a_person(approval, comparison, required):
    policy = dataclasses.replace(POLICY, approval=approval)
    assert decide(policy, facts(comparison=comparison)).approval_required is required


def test_report_renderings_round_trip_and_escape():
    hostile = InfraFacts(loaded=False, load_error="<script>alert(1)</script> | {{ ti }}\nsecond line")
    report = decide(POLICY, facts(infra=hostile))
    assert GateReport.from_json(report.to_json()) == report
    assert json.loads(report.to_json())["outcome"] == REJECT
    md = report.to_markdown()
    assert "| infra:load | fail |" in md and "\\| {{ ti }} second line" in md and "<script>" not in md
    page = report.to_html()
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert report.summary.startswith("reject: version 4 vs champion 3: infra:load:")
    long = dataclasses.replace(report, reason="x" * 2000)
    assert len(long.summary) == 500 and long.summary.endswith("...")


def test_policy_from_dict_validates_and_names_the_field():
    assert GatePolicy.from_dict({}) == GatePolicy()
    got = GatePolicy.from_dict({"floors": {"roc_auc": 0.7}, "mode": "superiority", "slices": ["plan"], "margin": 0})
    assert got.floors == {"roc_auc": 0.7} and got.slices == ("plan",) and got.margin == 0.0
    where = "include/config/churn.yaml: models.churn.gate"
    for data, message in [
        ({"mode": "better"}, "gate.mode: 'better' is not allowed; expected one of non_inferiority, superiority"),
        ({"margin": -0.1}, "gate.margin: -0.1 is not allowed; expected a number >= 0"),
        ({"floors": {"auc": 0.7}}, "gate.floors.auc: unknown metric; expected one of roc_auc"),
        ({"floors": {"roc_auc": "high"}}, "gate.floors.roc_auc: 'high' is not allowed; expected float"),
        ({"min_holdout_rows": 0}, "gate.min_holdout_rows: 0 is not allowed"),
        ({"confidence": 95}, "gate.confidence: 95.0 is not allowed"),
        ({"latency_budget_ms": 0}, "gate.latency_budget_ms: 0.0 is not allowed"),
        ({"slices": ["plan", "plan"]}, "gate.slices: ['plan', 'plan'] names a feature twice"),
        ({"first_model": "yolo"}, "gate.first_model: 'yolo' is not allowed; expected one of floors_only"),
        ({"threshold": 1}, "gate: unknown field 'threshold'; allowed fields: floors"),
    ]:
        with pytest.raises(ConfigError, match="^" + (where + message[4:]).replace("[", r"\[").replace("(", r"\(")):
            GatePolicy.from_dict(data, where)
