"""The serving app's Prometheus metrics (prometheus_client), one registry per app, served at ``/metrics``.

Names follow Prometheus conventions: the ``evergreen_`` prefix, base units (``_seconds``, ``_bytes``), ``_total``
on counters. Every label has a bounded set of values (the model, its two arms and their versions, the fixed
endpoint names, the config's features), never something a client sent.

=============================================  =========  =======================================================
name                                            type       labels / meaning
=============================================  =========  =======================================================
evergreen_predictions_total                     counter    model, version, arm: rows answered
evergreen_shadow_predictions_total              counter    model, version: rows the challenger scored in shadow
evergreen_requests_total                        counter    model, endpoint, code: requests answered
evergreen_request_errors_total                  counter    model, endpoint, reason: 4xx/5xx answers by cause
evergreen_model_errors_total                    counter    model, version, arm: model calls that raised
evergreen_request_duration_seconds              histogram  model, endpoint: request latency in the app
evergreen_prediction_score                      histogram  model, version, arm: positive-class scores
evergreen_batch_rows                            histogram  model, version, arm: rows per model call
evergreen_batch_duration_seconds                histogram  model, version, arm: time of one model call
evergreen_model_info                            gauge      model, arm, version: 1 for what each arm serves
evergreen_model_swaps_total                     counter    model: deployments swapped in after an alias moved
evergreen_model_load_errors_total               counter    model: versions that failed to load or warm up
evergreen_registry_poll_errors_total            counter    model: registry reads that failed
evergreen_prediction_log_queue_depth            gauge      model: records waiting to be spooled
evergreen_prediction_log_spooled_bytes          gauge      model: spool bytes not yet shipped
evergreen_prediction_log_shipped_total          counter    model: records shipped to the store
evergreen_prediction_log_refused_total          counter    model: records refused (disk bound reached)
evergreen_prediction_log_ship_errors_total      counter    model: failed shipping attempts (retried)
evergreen_prediction_log_rejected_total         counter    model: records the store cannot hold, set aside
evergreen_prediction_log_torn_total             counter    model: damaged spool lines skipped on replay
evergreen_prediction_log_spool_errors_total     counter    model: failed spool writes
evergreen_feature_drift_score                   gauge      model, feature, method, score_kind: latest drift score
evergreen_feature_drifted                       gauge      model, feature: 1 when the latest verdict is drift
evergreen_dataset_drift_share                   gauge      model: share of judged features drifted (latest)
evergreen_dataset_drift                         gauge      model: 1 when the latest dataset verdict is drift
evergreen_drift_window_start_timestamp_seconds  gauge      model: the day the latest drift record judged
=============================================  =========  =======================================================

The prediction log's numbers are read from its ``stats()`` at scrape time; the drift numbers from the latest
``drift`` record of the store (written by ``monitor_drift``; :func:`drift_snapshot`), which the app re-reads on its
registry poll. The feature drift gauge is the common ``model_feature_drift`` one, with the method and the kind of
score (a p-value drifts when low, a distance when high) as labels, since the two read in opposite directions.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evergreen.store.base import Record

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
#: how far back the app looks for the latest drift record (monitor_drift writes one per day)
DRIFT_LOOKBACK = dt.timedelta(days=35)


@dataclass(frozen=True)
class FeatureDriftGauge:
    feature: str
    method: str
    score_kind: str
    score: float | None
    drifted: bool | None


@dataclass(frozen=True)
class DriftSnapshot:
    """The latest drift record of a model, as gauges."""

    key: str
    window_start: dt.datetime
    status: str
    drifted_share: float | None
    dataset_drift: bool | None
    features: tuple[FeatureDriftGauge, ...]


def drift_snapshot(records: Sequence[Record]) -> DriftSnapshot | None:
    """The latest of a model's drift records (by window day, then key), or None when there is none.

    Reads the payload ``monitor_drift`` stores (:meth:`evergreen.monitor.drift.DriftResult.to_dict`): ``status``,
    ``drifted_share``, ``dataset_drift`` and per feature ``feature``, ``method``, ``score_kind``, ``score``,
    ``drifted``. A field that is missing or not a number is left out, never guessed.
    """
    if not records:
        return None
    latest = max(records, key=lambda r: (r.ts, r.key))
    payload = latest.payload or {}

    def number(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def flag(value: Any) -> bool | None:
        return value if isinstance(value, bool) else None

    features = []
    for f in payload.get("features") or ():
        if not isinstance(f, Mapping) or not isinstance(f.get("feature"), str):
            continue
        features.append(FeatureDriftGauge(f["feature"], str(f.get("method") or ""), str(f.get("score_kind") or ""),
                                          number(f.get("score")), flag(f.get("drifted"))))
    return DriftSnapshot(latest.key, latest.ts, str(payload.get("status") or ""), number(payload.get("drifted_share")),
                         flag(payload.get("dataset_drift")), tuple(features))


class _ReadAtScrape:
    """Collector of what other parts own: the prediction log's counters and the latest drift record."""

    def __init__(self, model: str, log_stats: Callable[[], Mapping[str, Any]] | None,
                 drift: Callable[[], DriftSnapshot | None]) -> None:
        self.model, self.log_stats, self.drift = model, log_stats, drift

    def describe(self) -> Iterable[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.model
        if self.log_stats is not None:
            try:
                stats = dict(self.log_stats())
            except Exception:
                log.exception("prediction log stats() failed; its metrics are left out of this scrape")
                stats = {}
            for key, name, kind, doc in (
                ("queue_depth", "evergreen_prediction_log_queue_depth", "gauge",
                 "Prediction records waiting to be spooled."),
                ("spooled_bytes", "evergreen_prediction_log_spooled_bytes", "gauge",
                 "Bytes in the prediction spool not yet shipped to the store."),
                ("shipped_total", "evergreen_prediction_log_shipped", "counter",
                 "Prediction records shipped to the store."),
                ("refused_total", "evergreen_prediction_log_refused", "counter",
                 "Prediction records refused by the log (its disk bound was reached)."),
                ("ship_errors_total", "evergreen_prediction_log_ship_errors", "counter",
                 "Failed attempts to ship spooled records to the store (retried)."),
                ("rejected_total", "evergreen_prediction_log_rejected", "counter",
                 "Records the store cannot hold, set aside in the spool's rejected/ folder."),
                ("torn_total", "evergreen_prediction_log_torn", "counter",
                 "Damaged spool lines skipped on replay."),
                ("spool_errors_total", "evergreen_prediction_log_spool_errors", "counter",
                 "Failed writes to the spool."),
            ):
                if not isinstance(stats.get(key), (int, float)):
                    continue
                family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(name, doc, labels=["model"])
                family.add_metric([m], float(stats[key]))
                yield family
        snap = self.drift()
        if snap is None:
            return
        score = GaugeMetricFamily("evergreen_feature_drift_score", "Latest drift score per feature (monitor_drift).",
                                  labels=["model", "feature", "method", "score_kind"])
        drifted = GaugeMetricFamily("evergreen_feature_drifted", "1 when the latest verdict for the feature is drift.",
                                    labels=["model", "feature"])
        for f in snap.features:
            if f.score is not None:
                score.add_metric([m, f.feature, f.method, f.score_kind], f.score)
            if f.drifted is not None:
                drifted.add_metric([m, f.feature], float(f.drifted))
        yield score
        yield drifted
        for name, doc, value in (
            ("evergreen_dataset_drift_share", "Share of judged features drifted (latest drift record).",
             snap.drifted_share),
            ("evergreen_dataset_drift", "1 when the latest dataset verdict is drift.",
             None if snap.dataset_drift is None else float(snap.dataset_drift)),
            ("evergreen_drift_window_start_timestamp_seconds",
             "Start of the day the latest drift record judged (Unix time).", snap.window_start.timestamp()),
        ):
            if value is not None:
                family = GaugeMetricFamily(name, doc, labels=["model"])
                family.add_metric([m], value)
                yield family


class ServingMetrics:
    """The metric objects of one app (own registry, so several apps in one process never share counters)."""

    def __init__(self, model: str, log_stats: Callable[[], Mapping[str, Any]] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.drift: DriftSnapshot | None = None
        self.predictions = Counter("evergreen_predictions", "Rows answered, by the version and arm that answered.",
                                   ["model", "version", "arm"], registry=r)
        self.shadow_predictions = Counter("evergreen_shadow_predictions",
                                          "Rows the challenger scored in shadow mode (the champion answered).",
                                          ["model", "version"], registry=r)
        self.requests = Counter("evergreen_requests", "Requests answered, by endpoint and HTTP status.",
                                ["model", "endpoint", "code"], registry=r)
        self.request_errors = Counter("evergreen_request_errors", "Requests answered with an error, by cause.",
                                      ["model", "endpoint", "reason"], registry=r)
        self.model_errors = Counter("evergreen_model_errors", "Model calls that raised (answered 5xx, or a shadow "
                                    "score lost).", ["model", "version", "arm"], registry=r)
        self.latency = Histogram("evergreen_request_duration_seconds", "Request latency inside the app.",
                                 ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.scores = Histogram("evergreen_prediction_score", "Positive-class scores.", ["model", "version", "arm"],
                                buckets=SCORE_BUCKETS, registry=r)
        self.batch_rows = Histogram("evergreen_batch_rows", "Rows per model call (micro-batches and batch requests).",
                                    ["model", "version", "arm"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_duration = Histogram("evergreen_batch_duration_seconds", "Time of one model call with its "
                                        "validation.", ["model", "version", "arm"], buckets=LATENCY_BUCKETS,
                                        registry=r)
        self.model_info = Gauge("evergreen_model_info", "1 for the version each arm serves.",
                                ["model", "arm", "version"], registry=r)
        self.swaps = Counter("evergreen_model_swaps", "Deployments swapped in after an alias moved.", ["model"],
                             registry=r)
        self.load_errors = Counter("evergreen_model_load_errors", "Versions that failed to load or warm up.",
                                   ["model"], registry=r)
        self.poll_errors = Counter("evergreen_registry_poll_errors", "Registry or store reads of the poll that "
                                   "failed.", ["model"], registry=r)
        r.register(_ReadAtScrape(model, log_stats, lambda: self.drift))

    def served(self, arms: Mapping[str, str]) -> None:
        """Set :data:`evergreen_model_info` to the deployment's arms (arm -> version)."""
        self.model_info.clear()
        for arm, version in arms.items():
            self.model_info.labels(self.model, arm, version).set(1)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
