"""The performance engine (pure): metrics with confidence intervals, the decay rule, and windows it cannot judge."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evergreen.config import get_config
from evergreen.monitor.performance import (
    CANNOT_JUDGE,
    DECAY,
    IMMATURE,
    NO_BASELINE,
    OK,
    TOO_SMALL,
    Baseline,
    Estimate,
    compare,
    evaluate_performance,
    evaluation_window,
)
from evergreen.monitor.maturity import label_arrival, label_landing_days
from evergreen_demo.simulate import simulate_day

DAY = dt.date(2027, 1, 10)


@pytest.fixture(scope="module")
def model():
    return get_config().model("churn")


def _day(model, n=3000, noise=0.15, day=DAY, version="1", arm="champion"):
    d = simulate_day(model, day, n, score_noise=noise, model_version=version, arm=arm)
    return d.predictions, d.outcomes.rename(columns={model.label.name: "label"})


def _ingested(model, start=DAY, end=DAY + dt.timedelta(days=1), missing=(), failed=()):
    """The label arrival of a window whose landing days all have ingestion records, except ``missing`` / ``failed``."""
    days = label_landing_days(start, end, model.performance.label_delay_days)
    records = {d: ({"status": "failed"} if d in failed else {"landed": 1}) for d in days if d not in missing}
    return label_arrival(model.name, start, end, model.performance.label_delay_days, records)


def _judge(model, predictions, outcomes, baseline_value=None, champion="1", labels=None, **baseline_kw):
    baselines = {} if baseline_value is None else {champion: Baseline(champion, model.metric, baseline_value,
                                                                      **baseline_kw)}
    end = DAY + dt.timedelta(days=1)
    return evaluate_performance(predictions, outcomes, model, window_start=DAY, window_end=end, as_of=end,
                                labels=labels or _ingested(model), champion_version=champion, baselines=baselines)


# --- metrics and intervals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss", "f1"])
def test_live_intervals_are_the_statistics_module_intervals(model, metric):
    """Live performance has no interval of its own: each group's record is evergreen.stats.metric_interval of its
    rows at performance.confidence, in the record's form (value, ci_low, ci_high, method)."""
    from evergreen import stats

    m = dataclasses.replace(model, metric=metric, performance=dataclasses.replace(model.performance, confidence=0.9))
    preds, outs = _day(m)
    joined = preds.merge(outs[["request_id", "label"]], on="request_id")
    column = "score" if metric in stats.SCORE_METRICS else "prediction"
    want = stats.metric_interval(metric, joined["label"].to_numpy(), positive=m.label.positive_class, confidence=0.9,
                                 **({"score": joined[column]} if column == "score" else {"pred": joined[column]}))
    result = _judge(m, preds, outs)
    got = result.group("all", "all").estimate
    assert got == Estimate(want.value, want.low, want.high, want.method)
    assert got.method == stats.CI_METHODS[metric] == result.ci_method
    assert result.to_dict()["groups"][0]["estimate"] == {"value": want.value, "ci_low": want.low,
                                                         "ci_high": want.high, "method": want.method}


def test_the_second_implementation_is_gone():
    from evergreen.monitor import performance

    for name in ("estimate_metric", "f1_bootstrap", "_mean_ci", "_z", "BOOTSTRAP_DRAWS", "CI_METHODS"):
        assert not hasattr(performance, name), name


# --- the decay rule -----------------------------------------------------------------------------------------


def test_decay_means_the_upper_bound_of_the_difference_is_below_minus_tolerance():
    live = Estimate(0.80, 0.78, 0.82, "delong")
    tol = 0.02
    # Without a baseline interval: decay iff ci_high < baseline - tolerance.
    assert compare(live, Baseline("1", "roc_auc", 0.845), "roc_auc", tol)[0] == DECAY  # 0.82 < 0.825
    assert compare(live, Baseline("1", "roc_auc", 0.835), "roc_auc", tol)[0] == OK  # 0.82 >= 0.815
    # The baseline's own noise widens the difference's interval (root-sum-square of the half-widths).
    status, d, lo, hi = compare(live, Baseline("1", "roc_auc", 0.845, 0.825, 0.865), "roc_auc", tol)
    assert d == pytest.approx(-0.045)
    assert hi == pytest.approx(-0.045 + np.hypot(0.02, 0.02))
    assert status == OK  # -0.0167 is not below -0.02: the drop is within the two intervals' noise
    # Lower is better for log loss: decay is a rise beyond the tolerance.
    loss = Estimate(0.60, 0.58, 0.62, "normal")
    assert compare(loss, Baseline("1", "log_loss", 0.50), "log_loss", 0.05)[0] == DECAY
    assert compare(loss, Baseline("1", "log_loss", 0.56), "log_loss", 0.05)[0] == OK


def test_a_healthy_window_passes_and_a_degraded_one_decays(model):
    preds, outs = _day(model)
    healthy_auc = roc_auc_score(outs["label"], preds["score"])
    ok = _judge(model, preds, outs, baseline_value=healthy_auc)
    assert ok.status == OK and ok.judged and not ok.decay
    bad_preds, bad_outs = _day(model, noise=0.6)
    bad = _judge(model, bad_preds, bad_outs, baseline_value=healthy_auc)
    assert bad.status == DECAY and bad.decay
    champ = bad.champion
    assert champ.difference_ci_high < -model.performance.tolerance
    assert champ.estimate.value == pytest.approx(roc_auc_score(bad_outs["label"], bad_preds["score"]))
    doc = bad.to_dict()
    assert doc["champion"]["baseline"]["value"] == pytest.approx(healthy_auc)
    assert doc["decay"] is True and doc["ci_method"] == "delong"


def test_metrics_per_version_and_arm_each_against_its_own_baseline(model):
    preds, outs = _day(model, n=4000)
    challenger = preds.index % 4 == 0
    preds.loc[challenger, ["model_version", "arm"]] = ["2", "challenger"]
    # the challenger serves noisier scores
    rng = np.random.default_rng(1)
    preds.loc[challenger, "score"] = np.clip(preds.loc[challenger, "score"] + rng.normal(0, 0.5, challenger.sum()), 0, 1)
    auc_1 = roc_auc_score(outs["label"][~challenger], preds["score"][~challenger])
    auc_2 = roc_auc_score(outs["label"][challenger], preds["score"][challenger])
    result = evaluate_performance(
        preds, outs, model, window_start=DAY, window_end=DAY + dt.timedelta(days=1), as_of=DAY + dt.timedelta(days=2),
        labels=_ingested(model), champion_version="1", baselines={"1": Baseline("1", "roc_auc", auc_1), "2": Baseline("2", "roc_auc", 0.9)},
    )
    assert result.status == OK  # the verdict is the champion's
    v2 = result.group("version", "2")
    assert v2.estimate.value == pytest.approx(auc_2) and v2.status == DECAY
    arm = result.group("arm", "challenger")
    assert arm.baseline.version == "2" and arm.n_predictions == challenger.sum()
    everything = result.group("all", "all")
    assert everything.baseline is None and everything.status == NO_BASELINE  # two versions: no single baseline


# --- windows that cannot be judged --------------------------------------------------------------------------


def test_the_landing_days_of_a_windows_labels_run_from_its_first_day_to_label_delay_after_its_last():
    assert label_landing_days(DAY, DAY + dt.timedelta(days=1), 0) == (DAY,)
    days = label_landing_days(DAY, DAY + dt.timedelta(days=2), 3)  # predictions of DAY and DAY+1, 3 days of delay
    assert days == tuple(DAY + dt.timedelta(days=i) for i in range(5))
    with pytest.raises(ValueError, match="label_delay_days must be >= 0"):
        label_landing_days(DAY, DAY, -1)


def test_the_shipped_churn_config_waits_the_30_days_its_label_is_defined_over(model):
    # "churn within 30 days of a scoring request": a label is final 30 days after the request
    assert "30 days" in model.description and model.performance.label_delay_days == 30


def test_window_whose_labels_have_not_all_been_ingested_is_immature_naming_the_missing_days(model):
    preds, outs = _day(model)  # every outcome is in the store already: only the ingestion records count
    days = label_landing_days(DAY, DAY + dt.timedelta(days=1), model.performance.label_delay_days)
    late = days[-3:]
    r = _judge(model, preds, outs, baseline_value=0.5, labels=_ingested(model, missing=late))
    assert r.status == IMMATURE and not r.judged and not r.decay and r.groups == []
    assert f"no ingestion record for 3 day(s): {late[0]} .. {late[-1]}" in r.reason
    assert f"has recorded {len(days) - 3} of those {len(days)} landing days" in r.reason
    assert "run ingest_feedback_churn for those days, then re-run this interval" in r.reason
    assert r.to_dict()["labels"]["missing"] == [d.isoformat() for d in late]
    # a failed ingestion counts as not landed, and says so
    failed = _judge(model, preds, outs, baseline_value=0.5, labels=_ingested(model, failed=days[:1]))
    assert failed.status == IMMATURE and f"ingestion failed for 1 day(s): {days[0]}" in failed.reason
    # the calendar says nothing: with every record present the same window is judged
    assert _judge(model, preds, outs, baseline_value=0.5).status == OK


def test_immature_window_without_a_champion_cannot_be_judged_and_says_both(model):
    preds, outs = _day(model)
    days = label_landing_days(DAY, DAY + dt.timedelta(days=1), model.performance.label_delay_days)
    r = _judge(model, preds, outs, champion=None, labels=_ingested(model, missing=days[2:]))
    assert r.status == CANNOT_JUDGE and r.reason.startswith("no champion: model 'churn' has no version")
    assert "nor are the window's labels all in yet" in r.reason and f"{days[2]} .. {days[-1]}" in r.reason
    assert r.groups == []  # partial labels: nothing measured


def test_unreadable_files_on_a_landing_day_are_noted_not_treated_as_missing(model):
    days = label_landing_days(DAY, DAY + dt.timedelta(days=1), model.performance.label_delay_days)
    records = {d: {"files_unreadable": [{"file": "x.csv"}]} if d == days[1] else {} for d in days}
    arrival = label_arrival("churn", DAY, DAY + dt.timedelta(days=1), model.performance.label_delay_days, records)
    assert arrival.mature and arrival.unreadable == (days[1],)
    assert f"with unreadable files, whose labels are not in the store: {days[1]}" in arrival.describe()


def test_label_arrival_must_be_of_the_window_judged(model):
    preds, outs = _day(model)
    other = _ingested(model, start=DAY - dt.timedelta(days=1), end=DAY)
    with pytest.raises(ValueError, match="label arrival of"):
        _judge(model, preds, outs, labels=other)


def test_the_positive_class_of_the_config_is_the_one_monitoring_scores(model):
    preds, outs = _day(model)
    flipped = dataclasses.replace(model, label=dataclasses.replace(model.label, positive=0))
    one = _judge(model, preds, outs).group("all", "all")
    zero = _judge(flipped, preds, outs).group("all", "all")
    assert one.n_positive + zero.n_positive == one.n_usable
    assert one.estimate.value == pytest.approx(roc_auc_score(outs["label"], preds["score"]))
    # scoring class 0 as positive with the class-1 score ranks exactly the other way round
    assert zero.estimate.value == pytest.approx(1 - one.estimate.value)


def test_evaluation_window_is_label_delay_older_than_the_interval(model):
    policy = dataclasses.replace(model.performance, label_delay_days=3, window_days=2)
    assert evaluation_window(dt.date(2027, 1, 10), dt.date(2027, 1, 11), policy) == (dt.date(2027, 1, 6),
                                                                                     dt.date(2027, 1, 8))


def test_too_few_labelled_rows_is_too_small(model):
    preds, outs = _day(model, n=3000)
    r = _judge(model, preds, outs.iloc[:150], baseline_value=0.5)
    assert r.status == TOO_SMALL and not r.judged and not r.decay
    assert "150 usable labelled rows of 3000" in r.reason and "ingest_feedback_churn" in r.reason


def test_small_labelled_share_is_too_small_even_with_many_rows(model):
    preds, outs = _day(model, n=3000)
    r = _judge(model, preds, outs.iloc[:1000], baseline_value=0.99)  # 1000 rows but share 0.33 < 0.5
    assert r.status == TOO_SMALL and not r.decay


def test_single_class_labels_cannot_be_judged(model):
    preds, outs = _day(model)
    outs["label"] = 0
    r = _judge(model, preds, outs, baseline_value=0.99)
    assert r.status == CANNOT_JUDGE and not r.decay
    assert "single class" in r.reason and "every one of the 3000 labels is 0" in r.reason


def test_missing_all_null_or_non_numeric_scores_cannot_be_judged(model):
    preds, outs = _day(model)
    r = _judge(model, preds.drop(columns=["score"]), outs, baseline_value=0.99)
    assert r.status == CANNOT_JUDGE and "no 'score' column" in r.reason
    r = _judge(model, preds.assign(score=None), outs, baseline_value=0.99)
    assert r.status == CANNOT_JUDGE and "null in every one" in r.reason
    r = _judge(model, preds.assign(score="high"), outs, baseline_value=0.99)
    assert r.status == CANNOT_JUDGE and "'high'" in r.reason


def test_some_bad_scores_are_excluded_and_counted_not_guessed(model):
    preds, outs = _day(model)
    preds["score"] = preds["score"].astype(object)
    preds.loc[:9, "score"] = "n/a"
    preds.loc[10:19, "score"] = None
    r = _judge(model, preds, outs, baseline_value=0.5)
    assert r.excluded == {"score_not_numeric": 10, "score_null": 10}
    assert r.n_usable == 2980 and r.status == OK


def test_empty_window_no_champion_and_no_baseline_cannot_be_judged(model):
    preds, outs = _day(model)
    empty = _judge(model, preds.iloc[:0], outs.iloc[:0], baseline_value=0.9)
    assert empty.status == CANNOT_JUDGE and "empty window" in empty.reason
    nochamp = _judge(model, preds, outs, champion=None)
    assert nochamp.status == CANNOT_JUDGE and nochamp.reason.startswith("no champion")
    assert nochamp.group("version", "1").estimate is not None  # the facts are still recorded
    nobase = _judge(model, preds, outs, baseline_value=None)
    assert nobase.status == CANNOT_JUDGE and "no offline baseline" in nobase.reason


def test_champion_that_served_nothing_in_the_window_is_too_small(model):
    preds, outs = _day(model, version="1")
    r = _judge(model, preds, outs, baseline_value=0.5, champion="7")
    assert r.status == TOO_SMALL and "champion version 7 served no predictions" in r.reason


def test_labels_outside_the_classes_are_excluded(model):
    preds, outs = _day(model)
    outs.loc[:4, "label"] = 2
    r = _judge(model, preds, outs, baseline_value=0.5)
    assert r.excluded == {"label_not_a_class": 5} and r.n_usable == 2995


def test_result_serialises_to_plain_json(model):
    import json

    preds, outs = _day(model)
    doc = _judge(model, preds, outs, baseline_value=0.8).to_dict()
    again = json.loads(json.dumps(doc, allow_nan=False))
    assert again == doc
    assert {g["by"] for g in doc["groups"]} == {"all", "version", "arm"}
