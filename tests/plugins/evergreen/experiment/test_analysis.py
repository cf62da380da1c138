"""evergreen.experiment.analysis on simulated prediction logs (no Airflow, no MLflow): the decisions (promote,
stop as worse, futility, horizon, continue), the sample-ratio check, shadow mode's paired comparison, and every bad
input as an explained cannot_decide."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from evergreen import stats
from evergreen.config import get_config
from evergreen.experiment import analysis as ab
from evergreen.experiment.policy import shadow_request_id

START = dt.date(2026, 12, 1)


def churn(**changes):
    model = get_config().model("churn")
    return dataclasses.replace(model, ab_test=dataclasses.replace(model.ab_test, **changes))


def split_log(n_c: int, n_t: int, p_c: float, p_t: float, *, seed: int = 0, auc_gain: float = 0.0,
              requests_per_entity: int = 1):
    """A split test's prediction log and outcomes: champion version 1, challenger version 2, one arm per entity."""
    rng = np.random.default_rng(seed)
    arm = np.array(["champion"] * n_c + ["challenger"] * n_t, dtype=object)
    n_ent = n_c + n_t
    ent = np.repeat(np.array([f"e{i}" for i in range(n_ent)], dtype=object), requests_per_entity)
    arm = np.repeat(arm, requests_per_entity)
    p = np.where(arm == "challenger", p_t, p_c)
    y = (rng.random(len(arm)) < p).astype(float)
    gain = np.where(arm == "challenger", auc_gain, 0.0)
    score = np.clip((0.25 + gain) * y + rng.normal(0.35, 0.2, len(arm)), 0, 1)
    ids = np.array([f"r{i}" for i in range(len(arm))], dtype=object)
    pred = pd.DataFrame({"request_id": ids, "entity_id": ent, "ts": pd.Timestamp(START, tz="UTC"),
                         "model_version": np.where(arm == "challenger", "2", "1"), "arm": arm,
                         "prediction": (score >= 0.5).astype(float), "score": score})
    return pred, pd.DataFrame({"request_id": ids, "label": y})


def shadow_log(n: int, *, seed: int = 0, challenger_gain: float = 0.0):
    """A shadow test's log: per request a champion row and a shadow row (the challenger's score), one outcome."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    base = rng.normal(0.35, 0.2, n)
    s_a = np.clip(0.2 * y + base, 0, 1)
    s_b = np.clip((0.2 + challenger_gain) * y + base + rng.normal(0, 0.05, n), 0, 1)
    ids = [f"r{i}" for i in range(n)]
    ent = [f"e{i}" for i in range(n)]
    rows = pd.DataFrame({"request_id": ids + [shadow_request_id(r) for r in ids], "entity_id": ent + ent,
                         "ts": pd.Timestamp(START, tz="UTC"), "model_version": ["1"] * n + ["2"] * n,
                         "arm": ["champion"] * n + ["shadow"] * n, "prediction": np.r_[s_a >= .5, s_b >= .5] * 1.0,
                         "score": np.r_[s_a, s_b]})
    return rows, pd.DataFrame({"request_id": ids, "label": y}), (y, s_a, s_b)


def run(pred, out, model=None, days: int = 7, **kw):
    return ab.analyze(pred, out, model or churn(), champion_version=kw.pop("champion", "1"),
                      challenger_version=kw.pop("challenger", "2"), window_start=START,
                      window_end=START + dt.timedelta(days=days), as_of=START + dt.timedelta(days=40), **kw)


# --- decisions -------------------------------------------------------------------------------------------------


def test_a_better_challenger_is_promoted_with_its_numbers():
    pred, out = split_log(9000, 9000, 0.30, 0.24, seed=1)  # churn 24% vs 30%: lower is better
    r = run(pred, out)
    assert r.status == ab.PROMOTE, r.reason
    assert r.metric == "outcome_rate(churned=1)" and r.better == "lower"
    assert r.effect["method"] == "two_proportion_z" and r.effect["value"] < 0 and r.gain > 0
    assert r.sequential["low"] > 0 and r.units >= r.minimum_units
    assert r.bootstrap["method"] == "bootstrap_two_sample" and r.bootstrap["high"] < 0
    # the always-valid sequence is wider than the fixed-horizon interval
    assert r.sequential["high"] - r.sequential["low"] > r.effect["high"] - r.effect["low"]
    arms = {a.arm: a for a in r.arms}
    assert arms["champion"].units == 9000 and arms["challenger"].value < arms["champion"].value
    assert r.srm["mismatch"] is False
    numbers = r.numbers()
    assert numbers["status"] == "promote" and numbers["gain_cs"][0] > 0 and "srm_p" in numbers
    assert "the challenger is better" in r.reason and "minimum sample size" in r.reason


def test_a_significant_gain_below_the_minimum_sample_size_continues():
    pred, out = split_log(1500, 1500, 0.30, 0.20, seed=2)
    r = run(pred, out)
    assert r.status == ab.CONTINUE and r.sequential["low"] > 0 and r.units < r.minimum_units
    assert "looks better" in r.reason


def test_a_worse_challenger_is_stopped_as_rejected_even_early():
    pred, out = split_log(1500, 1500, 0.30, 0.40, seed=3)
    r = run(pred, out)
    assert (r.status, r.stop_status) == (ab.STOP, ab.REJECTED), r.reason
    assert r.sequential["high"] < 0 and r.units < r.minimum_units


def test_an_aa_test_continues():
    pred, out = split_log(2000, 2000, 0.30, 0.30, seed=4)
    r = run(pred, out)
    assert r.status == ab.CONTINUE, r.reason
    assert r.sequential["low"] < 0 < r.sequential["high"]


def test_futility_stops_as_retired_once_no_effect_worth_detecting_fits():
    pred, out = split_log(40_000, 40_000, 0.30, 0.30, seed=5)
    r = run(pred, out)
    assert (r.status, r.stop_status) == (ab.STOP, ab.RETIRED), r.reason
    assert r.sequential["high"] < churn().ab_test.min_detectable_effect and "futility" in r.reason


def test_the_horizon_stops_an_inconclusive_test():
    pred, out = split_log(2000, 2000, 0.30, 0.30, seed=4)
    r = run(pred, out, days=churn().ab_test.max_days)
    assert (r.status, r.stop_status) == (ab.STOP, ab.RETIRED) and "inconclusive" in r.reason


def test_model_metric_compares_each_arms_auc_with_delong():
    model = churn(metric="model_metric")
    pred, out = split_log(3000, 3000, 0.3, 0.3, seed=6, auc_gain=0.25)
    r = run(pred, out, model)
    assert r.metric == "roc_auc" and r.better == "higher"
    assert r.effect["method"] == "independent_delong"
    arms = {a.arm: a for a in r.arms}
    for arm, version in (("champion", "1"), ("challenger", "2")):
        part = pred[pred["arm"] == arm].merge(out, on="request_id")
        ref = stats.auc_delong(part["label"], part["score"])
        assert arms[arm].value == pytest.approx(ref.value)
    assert r.effect["value"] == pytest.approx(arms["challenger"].value - arms["champion"].value)
    assert r.gain > 0 and r.bootstrap["low"] > 0


# --- shadow mode ------------------------------------------------------------------------------------------------


def test_shadow_mode_pairs_the_two_models_on_the_same_requests():
    model = churn(mode="shadow")
    pred, out, (y, s_a, s_b) = shadow_log(6000, seed=7, challenger_gain=0.15)
    r = run(pred, out, model)
    ref = stats.auc_delong_paired(y, s_a, s_b, 0.95)
    assert r.metric == "roc_auc"  # shadow compares the model metric whatever ab_test.metric says
    assert r.effect["method"] == "delong_paired"
    assert r.effect["value"] == pytest.approx(ref.difference.value)
    assert r.effect["se"] == pytest.approx(ref.difference.se)
    assert r.units == 6000 and r.srm["counts"] == {"champion": 6000, "shadow": 6000}
    assert r.bootstrap["method"] == "bootstrap_paired"
    assert r.status in (ab.PROMOTE, ab.CONTINUE) and r.gain > 0, r.reason


def test_shadow_mode_with_lost_shadow_rows_is_a_sample_ratio_mismatch():
    model = churn(mode="shadow")
    pred, out, _ = shadow_log(3000, seed=8)
    lost = pred[~((pred["arm"] == "shadow") & (np.arange(len(pred)) % 5 == 0))]  # a fifth of the shadow log lost
    r = run(lost, out, model)
    assert r.status == ab.SRM and r.srm["p_value"] < 0.001, r.reason


# --- sample ratio ----------------------------------------------------------------------------------------------


def test_a_sample_ratio_mismatch_stops_the_analysis():
    pred, out = split_log(2300, 1700, 0.3, 0.2, seed=9)  # a 42.5% challenger share where 50% was configured
    r = run(pred, out)
    assert r.status == ab.SRM and not r.decided
    assert r.srm["counts"] == {"champion": 2300, "challenger": 1700} and r.srm["p_value"] < 0.001
    assert r.effect is None and "sample-ratio mismatch" in r.reason


def test_the_sample_ratio_follows_the_configured_share():
    pred, out = split_log(3000, 1000, 0.3, 0.3, seed=10)
    assert run(pred, out).status == ab.SRM
    assert run(pred, out, churn(challenger_share=0.25)).srm["mismatch"] is False


# --- bad input: explained, never a decision, never a crash ----------------------------------------------------


def test_no_traffic_in_one_arm_cannot_decide():
    pred, out = split_log(2000, 0, 0.3, 0.3)
    r = run(pred, out)
    assert r.status == ab.CANNOT_DECIDE and "no traffic in arm 'challenger'" in r.reason


def test_outcomes_without_assignments_cannot_decide():
    pred, out = split_log(1000, 1000, 0.3, 0.3)
    pred["arm"] = None  # a server that logs no arm
    r = run(pred, out)
    assert r.status == ab.CANNOT_DECIDE and "outcomes without assignments" in r.reason
    assert r.excluded["no_arm"] == 2000 and r.excluded["outcomes_without_assignment"] == 2000


def test_zero_variance_cannot_decide():
    pred, out = split_log(1000, 1000, 0.0, 0.0)  # nobody churned in either arm
    r = run(pred, out)
    assert r.status == ab.CANNOT_DECIDE and "zero variance" in r.reason
    # degenerate but different arms: no spread within the arms either
    pred, out = split_log(1000, 1000, 0.0, 1.0)
    r = run(pred, out)
    assert r.status == ab.CANNOT_DECIDE and "zero variance" in r.reason
    # model metric: constant scores in both arms
    pred, out = split_log(1000, 1000, 0.3, 0.3)
    pred["score"] = 0.5
    r = run(pred, out, churn(metric="model_metric"))
    assert r.status == ab.CANNOT_DECIDE and "zero variance" in r.reason
    # model metric: a single class in one arm
    pred, out = split_log(1000, 1000, 0.3, 0.0)
    r = run(pred, out, churn(metric="model_metric"))
    assert r.status == ab.CANNOT_DECIDE and "single class" in r.reason


def test_an_arm_without_matured_outcomes_cannot_decide():
    pred, out = split_log(1000, 1000, 0.3, 0.3)
    out = out[out["request_id"].isin(pred.loc[pred["arm"] == "champion", "request_id"])]
    r = run(pred, out)
    assert r.status == ab.CANNOT_DECIDE and "no matured outcome in arm 'challenger'" in r.reason


def test_empty_windows_and_missing_aliases():
    pred, out = split_log(100, 100, 0.3, 0.3)
    assert run(pred.iloc[:0], out.iloc[:0]).status == ab.CANNOT_DECIDE
    assert run(pred, out, days=0).status == ab.IMMATURE
    assert run(pred, out, challenger=None).status == ab.CANNOT_DECIDE


def test_too_few_units_continue_rather_than_decide():
    pred, out = split_log(60, 60, 0.1, 0.9)
    r = run(pred, out)
    assert r.status == ab.CONTINUE and "too few matured units" in r.reason


def test_rows_outside_the_test_are_counted_and_left_out():
    pred, out = split_log(2000, 2000, 0.3, 0.3, seed=12)
    stray = pred.iloc[:300].copy()
    stray["request_id"] = [f"x{i}" for i in range(300)]
    stray["entity_id"] = [f"x{i}" for i in range(300)]
    stray.loc[stray.index[:100], "model_version"] = "0"  # a champion the test did not start with
    stray.loc[stray.index[100:200], "arm"] = "holdout"
    stray.loc[stray.index[200:], "arm"] = None
    out2 = pd.concat([out, pd.DataFrame({"request_id": stray["request_id"], "label": 1.0})])
    r = run(pd.concat([pred, stray]), out2)
    base = run(pred, out)
    assert r.excluded == {"no_arm": 100, "other_arm": 100, "other_version": 100, "outcomes_without_assignment": 300}
    assert r.effect == base.effect and r.status == base.status


def test_an_entity_seen_in_both_arms_belongs_to_neither():
    pred, out = split_log(2000, 2000, 0.3, 0.3, seed=13)
    moved = pred.iloc[[0]].copy()
    moved["request_id"], moved["arm"], moved["model_version"] = "moved", "challenger", "2"
    r = run(pd.concat([pred, moved]), out)
    assert r.excluded["entities_in_both_arms"] == 1
    assert {a.arm: a.entities for a in r.arms} == {"champion": 1999, "challenger": 2000}


def test_an_entity_counts_once_with_any_matured_outcome():
    pred, out = split_log(1500, 1500, 0.2, 0.2, seed=14, requests_per_entity=3)
    r = run(pred, out)
    arms = {a.arm: a for a in r.arms}
    assert arms["champion"].units == 1500 and arms["champion"].labelled == 4500
    joined = pred.merge(out, on="request_id")
    champ = joined[joined["arm"] == "champion"].groupby("entity_id")["label"].max()
    assert arms["champion"].value == pytest.approx(champ.mean())


# --- the rule itself ------------------------------------------------------------------------------------------


def test_judge_orders_the_rules():
    policy = churn().ab_test
    se = 0.005
    assert ab.judge(policy, 0.05, se, 20_000, 10_000, 5).status == ab.PROMOTE
    assert ab.judge(policy, 0.05, se, 5_000, 10_000, 5).status == ab.CONTINUE
    worse = ab.judge(policy, -0.05, se, 5_000, 10_000, 5)
    assert (worse.status, worse.stop_status) == (ab.STOP, ab.REJECTED)
    small = ab.judge(policy, 0.0, 0.001, 20_000, 10_000, 5)
    assert (small.status, small.stop_status) == (ab.STOP, ab.RETIRED)
    late = ab.judge(policy, 0.0, se, 5_000, 10_000, policy.max_days)
    assert (late.status, late.stop_status) == (ab.STOP, ab.RETIRED)


def test_the_record_is_json():
    import json

    pred, out = split_log(1000, 1000, 0.3, 0.25)
    doc = run(pred, out).to_dict()
    assert json.loads(json.dumps(doc))["window"] == {"start": "2026-12-01", "end": "2026-12-08"}


def test_a_request_without_an_entity_id_is_its_own_entity():
    pred, out = split_log(1000, 1000, 0.3, 0.3, seed=15)
    pred.loc[pred.index[:10], "entity_id"] = None
    r = run(pred, out)
    assert "entities_in_both_arms" not in r.excluded
    assert {a.arm: a.entities for a in r.arms} == {"champion": 1000, "challenger": 1000}
