"""evergreen.train.evaluate: the holdout metric, its interval (evergreen.stats), slices and the sanity floor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from evergreen.train import evaluate


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss", "f1"])
def test_evaluate_interval_is_the_statistics_module_interval(model, prepared, fitted, metric):
    """Training evaluation has no interval of its own: it is evergreen.stats.metric_interval on the same rows, at
    performance.confidence, seeded with training.seed and with >= 2,000 draws where it bootstraps."""
    from evergreen import stats

    m = dataclasses.replace(model, metric=metric,
                            performance=dataclasses.replace(model.performance, confidence=0.9))
    ev = evaluate.evaluate(m, fitted, prepared.holdout)
    score, pred = evaluate._positive_scores(m, fitted, prepared.holdout[m.feature_names])
    want = stats.metric_interval(metric, prepared.holdout["label"].to_numpy(), score, pred, confidence=0.9,
                                 positive=1, draws=stats.MIN_DRAWS, seed=m.training.seed)
    assert (ev.value, ev.ci_low, ev.ci_high, ev.ci_method) == (want.value, want.low, want.high, want.method)
    assert ev.confidence == 0.9 and ev.ci_method == stats.CI_METHODS[metric]
    assert (ev.draws, ev.seed) == ((stats.MIN_DRAWS, m.training.seed) if metric == "f1" else (None, None))
    assert ev.value == pytest.approx(evaluate.metric_value(metric, prepared.holdout["label"].to_numpy(), score, pred, 1))
    assert not hasattr(evaluate, "bootstrap_ci") and not hasattr(evaluate, "weighted_metric_fn")


def test_evaluate_reports_ci_slices_and_the_floor(model, prepared, fitted):
    ev = evaluate.evaluate(model, fitted, prepared.holdout)
    assert ev.metric == "roc_auc" and ev.rows == len(prepared.holdout)
    assert ev.ci_low < ev.value < ev.ci_high
    assert ev.passed == (ev.value >= model.training.sanity_floor)
    assert evaluate.evaluate(model, fitted, prepared.holdout).to_json() == ev.to_json()  # deterministic (DeLong)
    for feature in model.training.slices:
        rows = [s for s in ev.slices if s.feature == feature]
        assert {s.value for s in rows} == set(model.feature(feature).categories)
        assert sum(s.rows for s in rows) == ev.rows
    assert evaluate.Evaluation.from_json(ev.to_json()) == ev


def test_numeric_slices_use_quartiles_and_sanity_floor_can_fail(model, prepared, fitted):
    strict = dataclasses.replace(
        model, training=dataclasses.replace(model.training, slices=("tenure_months",), sanity_floor=0.999)
    )
    ev = evaluate.evaluate(strict, fitted, prepared.holdout)
    assert not ev.passed
    assert len(ev.slices) == 4 and sum(s.rows for s in ev.slices) == ev.rows


def test_training_and_monitoring_score_the_positive_class_the_config_names(model, prepared, fitted):
    import pandas as pd

    from evergreen.monitor.maturity import label_arrival
    from evergreen.monitor.performance import evaluate_performance

    flipped = dataclasses.replace(model, label=dataclasses.replace(model.label, positive=0))
    holdout = prepared.holdout
    one, zero = evaluate.evaluate(model, fitted, holdout), evaluate.evaluate(flipped, fitted, holdout)
    n_ones = int((holdout["label"] == 1).sum())
    assert (one.positives, zero.positives) == (n_ones, len(holdout) - n_ones)
    # class 0's probability ranks class 0 exactly as class 1's ranks class 1
    assert zero.value == pytest.approx(one.value, abs=1e-12)

    # live monitoring of the same rows, logged with the score of the positive class, agrees number for number
    score, _ = evaluate._positive_scores(flipped, fitted, holdout[model.feature_names])
    day = holdout["ts"].min().date()
    predictions = pd.DataFrame({"request_id": holdout["request_id"], "model_version": "1", "arm": "champion",
                                "score": score})
    outcomes = holdout[["request_id", "label"]]
    end = day + dt.timedelta(days=1)
    labels = label_arrival("churn", day, end, 0, {day: {}})
    live = evaluate_performance(predictions, outcomes, flipped, window_start=day, window_end=end, as_of=end,
                                labels=labels, champion_version="1").champion
    assert live.n_positive == zero.positives
    assert live.estimate.value == pytest.approx(zero.value, abs=1e-9)
