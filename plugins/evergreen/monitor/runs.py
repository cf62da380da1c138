"""The MLflow side of monitoring: one run per judged day, updated in place, and the offline baseline a live
metric is compared with.

Each ``(kind, model, day)`` has one run in the experiment ``evergreen/<model>/monitoring``, found again by its tag
``evergreen.monitoring_key``. Metrics are logged at a deterministic timestamp (the window's start) with ``step`` =
the run's revision: an identical re-run logs nothing new (MLflow drops exact duplicates), a re-run with different
data adds revision n+1, which MLflow shows as the latest value. So a re-run of an interval never adds a run and
never rewrites history, whichever DAG (``monitor_drift``, ``evaluate_performance``) wrote it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from evergreen.tracking import TAG, quote

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.monitor.performance import Baseline

MONITORING_KEY_TAG = f"{TAG}monitoring_key"
REVISION_TAG = f"{TAG}revision"


def monitoring_experiment(model: str) -> str:
    return f"evergreen/{model}/monitoring"


def version_baseline(client: MlflowClient, model: str, version: Any, metric: str) -> Baseline:
    """The offline baseline of a model version: metric ``holdout_<metric>`` (and its CI bounds) of its run."""
    from evergreen.monitor.performance import Baseline

    key = f"holdout_{metric}"
    metrics: dict[str, float] = {}
    if getattr(version, "run_id", None):
        metrics = dict(client.get_run(version.run_id).data.metrics)
    value, source = metrics.get(key), f"MLflow run {version.run_id} metric {key}"
    if value is None:  # a version registered without a run keeps its numbers in tags
        tags = version.tags or {}
        tag = tags.get(f"{TAG}metric.{key}") or tags.get(f"{TAG}metric.{metric}")
        value, source = (float(tag), f"version tag {TAG}metric.{key}") if tag is not None else (None, "")
    return Baseline(version=str(version.version), metric=metric, value=value,
                    ci_low=metrics.get(f"{key}_ci_low"), ci_high=metrics.get(f"{key}_ci_high"),
                    run_id=getattr(version, "run_id", None), source=source)


def upsert_monitoring_run(
    client: MlflowClient,
    experiment: str,
    *,
    key: str,
    run_name: str,
    ts: dt.datetime,
    metrics: dict[str, float | None],
    tags: dict[str, Any],
    params: dict[str, Any] | None = None,
    texts: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> str:
    """Create or update the one run of ``key``; returns its id (see the module docstring for the revision rule)."""
    import math

    from mlflow.entities import Metric, Param, RunTag

    ts_ms = int(ts.timestamp() * 1000)
    found = client.search_runs([experiment], filter_string=f"tags.`{MONITORING_KEY_TAG}` = {quote(key)}",
                               max_results=5, order_by=["attributes.start_time ASC"])
    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if found:
        run = found[0]
        run_id = run.info.run_id
        old = dict(run.data.metrics)
        revision = int(run.data.tags.get(REVISION_TAG, "1"))
        stale = sorted(set(old) - set(clean))
        if any(old.get(k) != v for k, v in clean.items()) or any(not math.isnan(old[k]) for k in stale):
            revision += 1
        for extra in found[1:]:  # a duplicate can only come from a race between two first runs; keep one
            client.delete_run(extra.info.run_id)
    else:
        run_id = client.create_run(experiment, start_time=ts_ms, run_name=run_name,
                                   tags={MONITORING_KEY_TAG: key}).info.run_id
        revision, stale = 1, []
    entries = [Metric(k, v, ts_ms, revision) for k, v in sorted(clean.items())]
    entries += [Metric(k, float("nan"), ts_ms, revision) for k in stale]  # a metric that is gone reads NaN
    all_tags = {**{k: str(v) for k, v in tags.items()}, REVISION_TAG: str(revision), MONITORING_KEY_TAG: key}
    run_tags = [RunTag(k, v[:5000]) for k, v in sorted(all_tags.items())]
    run_params = [Param(k, str(v)[:6000]) for k, v in sorted((params or {}).items())]
    if found:  # params are immutable in MLflow: log only the ones the run does not have yet
        have = found[0].data.params
        run_params = [p for p in run_params if p.key not in have]
    for i in range(0, max(len(entries), 1), 900):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run_id, metrics=entries[i:i + 900], tags=run_tags if i == 0 else [],
                         params=run_params if i == 0 else [])
    for name, text in (texts or {}).items():
        client.log_text(run_id, text, name)
    for name, path in (files or {}).items():
        client.log_artifact(run_id, path, artifact_path=name or None)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def run_url(hook: Any, experiment: str, run_id: str) -> str | None:
    """The MLflow UI page of a monitoring run from the platform's ``mlflow_base_url``; None when it is unset.

    Never from ``hook``'s tracking URI: the address Airflow reaches MLflow at is not the one people open, and a link
    ends up in records, Slack and e-mail. (``hook`` stays in the signature for the callers.)
    """
    from evergreen.config import get_config
    from evergreen.links import mlflow_run_url

    return mlflow_run_url(get_config().platform.mlflow_base_url, experiment, run_id)
