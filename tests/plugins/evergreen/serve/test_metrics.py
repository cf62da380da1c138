"""The drift gauges' source: the latest drift record of a model, read field by field."""

from __future__ import annotations

import datetime as dt

from evergreen.serve.metrics import ServingMetrics, drift_snapshot
from evergreen.store.base import Record
from serving_support import metric_value

DAY = dt.datetime(2026, 11, 5, tzinfo=dt.timezone.utc)


def test_the_latest_record_by_day_wins_and_missing_fields_stay_missing():
    older = Record("drift", "churn/2026-11-05", "churn", DAY, {"drifted_share": 0.1, "features": []})
    newer = Record("drift", "churn/2026-11-06", "churn", DAY + dt.timedelta(days=1), {
        "status": "cannot_judge", "drifted_share": None, "dataset_drift": None,
        "features": [{"feature": "plan", "method": "psi", "score_kind": "distance", "score": 0.3, "drifted": True},
                     {"feature": "region", "score": "n/a"}, "garbage"]})
    snap = drift_snapshot([newer, older])
    assert snap.key == "churn/2026-11-06" and snap.status == "cannot_judge"
    assert snap.drifted_share is None and snap.dataset_drift is None
    assert [(f.feature, f.score, f.drifted) for f in snap.features] == [("plan", 0.3, True), ("region", None, None)]
    assert drift_snapshot([]) is None


def test_gauges_are_exposed_only_for_what_the_record_says():
    from prometheus_client import generate_latest

    metrics = ServingMetrics("churn", lambda: {"queue_depth": 3, "spooled_bytes": 10, "shipped_total": 5,
                                               "refused_total": 1, "ship_errors_total": 0, "torn_total": 2})
    metrics.drift = drift_snapshot([Record("drift", "k", "churn", DAY, {
        "drifted_share": 0.25, "dataset_drift": False,
        "features": [{"feature": "plan", "method": "psi", "score_kind": "distance", "score": 0.3, "drifted": False}]})])
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "evergreen_feature_drift_score", feature="plan", method="psi",
                        score_kind="distance") == 0.3
    assert metric_value(text, "evergreen_dataset_drift_share", model="churn") == 0.25
    assert metric_value(text, "evergreen_dataset_drift") == 0
    assert metric_value(text, "evergreen_prediction_log_queue_depth") == 3
    assert metric_value(text, "evergreen_prediction_log_shipped_total") == 5
    assert metric_value(text, "evergreen_prediction_log_torn_total") == 2
    assert "evergreen_prediction_log_rejected_total" not in text  # not in this log's stats
