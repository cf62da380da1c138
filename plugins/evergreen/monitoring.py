"""Task-level glue of ``monitor_drift`` and ``evaluate_performance``: read the run's window, call the pure engines
(:mod:`evergreen.drift`, :mod:`evergreen.performance`), record the result, log it to MLflow, signal.

Every function here takes the model name and the Airflow task context and is called from inside a task, so the
heavy libraries are imported inside the functions. What is computed depends only on the run's data interval and
the data, never on the wall clock, and every write is an upsert keyed by the interval:

* the platform record ``(kind, f"{model}/{day}")`` -- ``day`` is the (last) day of the predictions judged;
* one MLflow run per ``(kind, model, day)`` in the experiment ``evergreen/<model>/monitoring``, found again by its
  tag ``evergreen.monitoring_key`` and updated in place. Metrics are logged at a deterministic timestamp (the
  window's start) with ``step`` = the run's revision: an identical re-run logs nothing new (MLflow drops exact
  duplicates), a re-run with different data adds revision n+1, which MLflow shows as the latest value.

The signal tasks raise ``AirflowSkipException`` when there is nothing to signal or the run is a backfill (a skipped
task emits no Asset event, so ``retrain`` never hears of it); otherwise they set the Asset event's ``extra`` and send
one alert.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import zlib
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.context import interval_days, is_backfill
from evergreen.dag_common import decay_asset, drift_asset

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from evergreen.config import ModelConfig
    from evergreen.performance import Baseline
    from evergreen.reference import ReferenceStats
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

CHAMPION = "champion"
MONITORING_KEY_TAG = "evergreen.monitoring_key"
REVISION_TAG = "evergreen.revision"
TRAINING_WINDOW_TAG = "evergreen.training_window"


def monitoring_experiment(model: str) -> str:
    return f"evergreen/{model}/monitoring"


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _model(model_name: str) -> ModelConfig:
    from evergreen.config import get_config

    return get_config().model(model_name)


def _airflow_info(context: Any) -> dict[str, Any]:
    ti = context.get("ti")
    run = context.get("dag_run")
    return {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None),
            "task_id": getattr(ti, "task_id", None), "try_number": getattr(ti, "try_number", None),
            "run_type": str(getattr(getattr(run, "run_type", None), "value", getattr(run, "run_type", None)))}


# --- registry -----------------------------------------------------------------------------------------------


def champion_version(client: MlflowClient, model: str) -> Any | None:
    """The model version behind the ``champion`` alias, or None when there is no registered model or alias."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(CHAMPION)
    return None if version is None else client.get_model_version(model, str(version))


def version_baseline(client: MlflowClient, model: str, version: Any, metric: str) -> Baseline:
    """The offline baseline of a model version: metric ``holdout_<metric>`` (and its CI bounds) of its run."""
    from evergreen.performance import Baseline

    key = f"holdout_{metric}"
    metrics: dict[str, float] = {}
    if getattr(version, "run_id", None):
        metrics = dict(client.get_run(version.run_id).data.metrics)
    value, source = metrics.get(key), f"MLflow run {version.run_id} metric {key}"
    if value is None:  # a version registered without a run keeps its numbers in tags
        tags = version.tags or {}
        tag = tags.get(f"evergreen.metric.{key}") or tags.get(f"evergreen.metric.{metric}")
        value, source = (float(tag), f"version tag evergreen.metric.{key}") if tag is not None else (None, "")
    return Baseline(version=str(version.version), metric=metric, value=value,
                    ci_low=metrics.get(f"{key}_ci_low"), ci_high=metrics.get(f"{key}_ci_high"),
                    run_id=getattr(version, "run_id", None), source=source)


# --- MLflow monitoring runs ---------------------------------------------------------------------------------


def experiment_id(hook: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return hook.experiment_id(name)
    except MlflowException:
        # monitor_drift and evaluate_performance may create the experiment at the same moment; the loser reads it
        found = hook.get_conn().get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


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
    found = client.search_runs([experiment], filter_string=f"tags.`{MONITORING_KEY_TAG}` = '{key}'",
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


def _mlflow_url(hook: Any, experiment: str, run_id: str) -> str | None:
    from evergreen.config import get_config
    from evergreen.links import mlflow_run_url

    base = get_config().platform.mlflow_base_url
    if not base and str(hook.tracking_uri).startswith(("http://", "https://")):
        base = hook.tracking_uri
    return mlflow_run_url(base, experiment, run_id)


# --- evaluate_performance ------------------------------------------------------------------------------------


def evaluate_performance_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``evaluate`` of ``evaluate_performance_<model>``: judge the matured window, record, log to MLflow."""
    import pandas as pd

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.performance import evaluate_performance, evaluation_window
    from evergreen.store.base import OUTCOME_COLUMNS, Record

    model = _model(model_name)
    first, after = interval_days(context)
    start, end = evaluation_window(first, after, model.performance)
    day = end - dt.timedelta(days=1)
    key = f"{model_name}/{day.isoformat()}"
    store: Store = StoreHook().get_conn()
    predictions = store.read_predictions(model_name, day_start(start), day_start(end))
    if predictions.empty:
        outcomes = pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    else:
        outcomes = store.read_outcomes(model_name, request_ids=predictions["request_id"].astype(str).tolist())

    hook = MlflowHook()
    client = hook.get_conn()
    champion = champion_version(client, model_name)
    versions = set(predictions["model_version"].dropna().astype(str)) if "model_version" in predictions else set()
    if champion is not None:
        versions.add(str(champion.version))
    baselines = {}
    for v in sorted(versions):
        try:
            same = champion is not None and str(champion.version) == v
            mv = champion if same else client.get_model_version(model_name, v)
        except Exception as exc:  # a version logged by the server but unknown to the registry has no baseline
            log.warning("performance %s: version %s has no registry entry (%s); no baseline for it", key, v, exc)
            continue
        baselines[v] = version_baseline(client, model_name, mv, model.metric)

    result = evaluate_performance(
        predictions, outcomes, model, window_start=start, window_end=end, as_of=after,
        champion_version=None if champion is None else str(champion.version), baselines=baselines,
    )
    log.info("performance %s: %s -- %s", key, result.status, result.reason)
    backfill = is_backfill(context)

    metrics: dict[str, float | None] = {"n_predictions": result.n_predictions, "n_labelled": result.n_labelled,
                                        "n_usable": result.n_usable, "labelled_share": result.labelled_share}
    for g in result.groups:
        prefix = model.metric if g.by == "all" else f"{model.metric}.{g.by}_{g.value}"
        metrics[f"n_usable.{g.by}_{g.value}"] = g.n_usable
        if g.estimate is not None:
            metrics[prefix] = g.estimate.value
            metrics[f"{prefix}_ci_low"] = g.estimate.ci_low
            metrics[f"{prefix}_ci_high"] = g.estimate.ci_high
    champ = result.champion
    if champ is not None and champ.estimate is not None:
        metrics["champion_" + model.metric] = champ.estimate.value
        if champ.baseline is not None:
            metrics["baseline_" + model.metric] = champ.baseline.value
        metrics["difference"] = champ.difference
        metrics["difference_ci_high"] = champ.difference_ci_high
        metrics["difference_ci_low"] = champ.difference_ci_low
    payload = result.to_dict()
    experiment = experiment_id(hook, monitoring_experiment(model_name))
    run_id = upsert_monitoring_run(
        client, experiment, key=f"performance/{key}", run_name=f"performance-{day.isoformat()}",
        ts=day_start(start), metrics=metrics,
        tags={"evergreen.kind": "performance", "evergreen.model": model_name, "evergreen.day": day.isoformat(),
              "evergreen.status": result.status, "evergreen.reason": result.reason,
              "evergreen.champion_version": result.champion_version or "",
              "evergreen.window": f"{start.isoformat()}/{end.isoformat()}",
              "evergreen.backfill": str(backfill).lower()},
        params={"metric": model.metric, "ci_method": result.ci_method, "tolerance": model.performance.tolerance,
                "confidence": model.performance.confidence},
        texts={"performance.json": json.dumps(payload, indent=1, default=str)},
    )
    url = _mlflow_url(hook, experiment, run_id)
    payload.update({"record_key": key, "interval": {"start": first.isoformat(), "end": after.isoformat()},
                    "backfill": backfill, "mlflow": {"experiment_id": experiment, "run_id": run_id, "url": url},
                    "airflow": _airflow_info(context)})
    store.put_record(Record("performance", key, model_name, day_start(day), payload))
    summary: dict[str, Any] = {
        "headline": f"{result.status}: {result.reason}",
        "kind": "performance", "model": model_name, "day": day.isoformat(), "record_key": key,
        "window": payload["window"], "status": result.status, "reason": result.reason, "signal": result.decay,
        "backfill": backfill, "mlflow_run_id": run_id, "mlflow_run_url": url,
    }
    if champ is not None and champ.estimate is not None:
        summary["numbers"] = {
            "metric": model.metric, "champion_version": result.champion_version, "live": champ.estimate.value,
            "live_ci": [champ.estimate.ci_low, champ.estimate.ci_high],
            "baseline": champ.baseline.value if champ.baseline else None,
            "baseline_ci": [champ.baseline.ci_low, champ.baseline.ci_high] if champ.baseline else None,
            "difference": champ.difference, "difference_ci": [champ.difference_ci_low, champ.difference_ci_high],
            "tolerance": model.performance.tolerance, "labelled_rows": champ.n_usable,
        }
    return summary


# --- monitor_drift -------------------------------------------------------------------------------------------


class CannotJudge(Exception):
    """The run cannot judge drift (no champion, no reference data); the message says why and what to do."""


def training_window(version: Any) -> tuple[dt.date, dt.date]:
    tag = (version.tags or {}).get(TRAINING_WINDOW_TAG)
    if not tag:
        raise CannotJudge(f"champion version {version.version} has no tag {TRAINING_WINDOW_TAG}, so its training "
                          "data cannot be located to build its reference; set the tag ('YYYY-MM-DD/YYYY-MM-DD')")
    try:
        a, b = tag.split("/")
        return dt.date.fromisoformat(a), dt.date.fromisoformat(b)
    except ValueError:
        raise CannotJudge(f"champion version {version.version}: tag {TRAINING_WINDOW_TAG}={tag!r} is not "
                          "'YYYY-MM-DD/YYYY-MM-DD'") from None


def champion_reference(model: ModelConfig, version: Any, store: Store) -> tuple[ReferenceStats, str, bool]:
    """The champion's reference statistics: loaded from the lake, or built once from its training data.

    Returns ``(reference, uri, built_now)``.
    """
    from evergreen.reference import build_reference, load_reference, save_reference
    from evergreen.store.base import Record

    uri = lake.reference_dir(model.name, version.version)
    try:
        return load_reference(uri), uri, False
    except FileNotFoundError:
        pass
    start, end = training_window(version)
    train, parts = lake.read_partitions(model.name, "labelled", start, end)
    if train.empty:
        raise CannotJudge(f"champion version {version.version}: no labelled partitions in the lake for its training "
                          f"window [{start}, {end}) to build its reference from")
    ref = build_reference(train, model, model.drift.report_sample_size, version=version.version)
    save_reference(ref, uri)
    store.put_record(Record("reference", f"{model.name}/version={version.version}", model.name, day_start(end),
                            {**ref.summary(), "uri": uri, "training_window": [start.isoformat(), end.isoformat()],
                             "partitions": parts}))
    log.info("built the reference of %s version %s from %d rows of %d partitions", model.name, version.version,
             len(train), len(parts))
    return ref, uri, True


def report_sample(frame: pd.DataFrame, size: int, seed_key: str) -> pd.DataFrame:
    """A bounded, deterministic sample (same window, same rows): a seeded draw without replacement, in order."""
    import numpy as np

    if len(frame) <= size:
        return frame.reset_index(drop=True)
    rng = np.random.default_rng(zlib.crc32(seed_key.encode()))
    rows = np.sort(rng.choice(len(frame), size=size, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def drift_report_html(result: Any, reference: ReferenceStats, current: pd.DataFrame, model: ModelConfig,
                      seed_key: str) -> tuple[str, dict[str, int]] | None:
    """Evidently's data drift report on a bounded sample, configured with the engine's methods and thresholds.

    Returns ``(html, sizes)`` or None when there is nothing the report could show. The report starts with a banner
    that says the sample sizes: its numbers are those of the sample, the verdict of record is the engine's.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    judged = [f for f in result.features if f.status == "ok" and f.feature in current.columns
              and reference.sample is not None and f.feature in reference.sample.columns]
    if not judged or current.empty or reference.sample_size == 0:
        return None
    names = [f.feature for f in judged]
    size = model.drift.report_sample_size
    cur = report_sample(current[names], size, seed_key)
    ref = report_sample(reference.sample[names], size, seed_key + "/reference")
    num = [f.feature for f in judged if f.kind == "num"]
    cat = [f.feature for f in judged if f.kind != "num"]
    for frame in (cur, ref):
        for name in num:  # the engine drops nulls and +-inf; so does the report's sample
            frame[name] = frame[name].astype("float64").replace([float("inf"), float("-inf")], float("nan"))
        for name in cat:
            frame[name] = frame[name].astype(str).where(frame[name].notna(), None)
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    preset = DataDriftPreset(
        columns=names, drift_share=model.drift.drift_share,
        per_column_method={f.feature: f.method for f in judged},
        per_column_threshold={f.feature: f.threshold for f in judged},
    )
    snapshot = Report([preset]).run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                                    reference_data=Dataset.from_pandas(ref, data_definition=definition))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        snapshot.save_html(str(path))
        html = path.read_text()
    sizes = {"current_sample": len(cur), "current_rows": len(current), "reference_sample": len(ref),
             "reference_rows": reference.n_rows}
    banner = (
        '<div style="font-family:sans-serif;padding:8px;background:#fff3cd">'
        f"Evergreen drift report for {model.name}: Evidently ran on a deterministic sample of "
        f"{sizes['current_sample']} of {sizes['current_rows']} current rows and {sizes['reference_sample']} reference "
        f"rows (of {sizes['reference_rows']} training rows; report_sample_size={size}). Its numbers are the sample's; "
        f"the verdict of record (all rows) is: dataset drift = {result.dataset_drift}, drifted share = "
        f"{result.drifted_share}.</div>"
    )
    marker = html.find("<body")
    if marker >= 0:
        close = html.find(">", marker) + 1
        html = html[:close] + banner + html[close:]
    else:
        html = banner + html
    return html, sizes


def _cannot_judge_drift(model: ModelConfig, reason: str, n_current: int) -> Any:
    from evergreen.drift import DriftResult

    return DriftResult(status="cannot_judge", dataset_drift=None, drifted_share=None,
                       drift_share_threshold=model.drift.drift_share, features=(), reason=reason, n_reference=0,
                       n_current=n_current)


def monitor_drift_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``detect`` of ``monitor_drift_<model>``: the interval's logged features against the champion's reference."""
    from evergreen.drift import compute_drift
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.store.base import Record

    model = _model(model_name)
    first, after = interval_days(context)
    day = after - dt.timedelta(days=1)
    key = f"{model_name}/{day.isoformat()}"
    store: Store = StoreHook().get_conn()
    predictions = store.read_predictions(model_name, day_start(first), day_start(after))
    current = predictions[[c for c in model.feature_names if c in predictions.columns]]
    hook = MlflowHook()
    client = hook.get_conn()
    champion = champion_version(client, model_name)
    reference = None
    reference_info: dict[str, Any] = {}
    if champion is None:
        result = _cannot_judge_drift(model, f"no champion: model '{model_name}' has no version with alias "
                                     "'champion', so there is no reference to compare with", len(current))
    else:
        try:
            reference, uri, built = champion_reference(model, champion, store)
            reference_info = {"version": str(champion.version), "uri": uri, "built_now": built,
                              "n_rows": reference.n_rows}
            result = compute_drift(reference, current, model)
        except CannotJudge as exc:
            result = _cannot_judge_drift(model, str(exc), len(current))
    backfill = is_backfill(context)
    log.info("drift %s: %s dataset_drift=%s share=%s %s", key, result.status, result.dataset_drift,
             result.drifted_share, result.reason or "")

    report, report_error = None, None
    if reference is not None and result.status == "ok":
        try:
            report = drift_report_html(result, reference, current, model, f"{model_name}/{day.isoformat()}")
        except Exception as exc:  # the report illustrates the verdict; it must not cost the verdict itself
            log.exception("drift %s: the Evidently report failed; the verdict is recorded without it", key)
            report_error = f"{type(exc).__name__}: {exc}"[:2000]
    metrics: dict[str, float | None] = {"n_current": result.n_current, "n_reference": result.n_reference,
                                        "drifted_share": result.drifted_share,
                                        "dataset_drift": None if result.dataset_drift is None
                                        else float(result.dataset_drift)}
    tags = {"evergreen.kind": "drift", "evergreen.model": model_name, "evergreen.day": day.isoformat(),
            "evergreen.status": result.status, "evergreen.reason": result.reason or "",
            "evergreen.champion_version": "" if champion is None else str(champion.version),
            "evergreen.window": f"{first.isoformat()}/{after.isoformat()}", "evergreen.backfill": str(backfill).lower()}
    if report_error:
        tags["evergreen.report_error"] = report_error
    for f in result.features:
        metrics[f"drift_score.{f.feature}"] = f.score
        metrics[f"drifted.{f.feature}"] = None if f.drifted is None else float(f.drifted)
        tags[f"evergreen.method.{f.feature}"] = f"{f.method} (threshold {f.threshold})"
        if f.status != "ok":
            tags[f"evergreen.cannot_judge.{f.feature}"] = f.reason or f.status
    payload = result.to_dict()
    texts = {"drift.json": json.dumps(payload, indent=1, default=str)}
    if report is not None:
        html, sizes = report
        texts["drift_report.html"] = html
        metrics.update({f"report.{k}": v for k, v in sizes.items()})
    experiment = experiment_id(hook, monitoring_experiment(model_name))
    run_id = upsert_monitoring_run(client, experiment, key=f"drift/{key}", run_name=f"drift-{day.isoformat()}",
                                   ts=day_start(first), metrics=metrics, tags=tags, texts=texts,
                                   params={"drift_share": model.drift.drift_share,
                                           "report_sample_size": model.drift.report_sample_size})
    url = _mlflow_url(hook, experiment, run_id)
    payload = json.loads(json.dumps(payload, default=str))  # numpy scalars and tuples as JSON values
    payload.update({"record_key": key, "model": model_name,
                    "window": {"start": first.isoformat(), "end": after.isoformat()}, "reference": reference_info,
                    "report": report[1] if report is not None else ({"error": report_error} if report_error else None),
                    "backfill": backfill,
                    "mlflow": {"experiment_id": experiment, "run_id": run_id, "url": url},
                    "airflow": _airflow_info(context)})
    store.put_record(Record("drift", key, model_name, day_start(day), payload))
    drifted = [f.feature for f in result.features if f.drifted]
    if result.status == "ok":
        headline = (f"{'dataset drift' if result.dataset_drift else 'no dataset drift'}: {len(drifted)} of "
                    f"{result.n_judged} judged features drifted (share {result.drifted_share:.2f}, policy "
                    f"drift_share {result.drift_share_threshold:g})" + (f": {', '.join(drifted)}" if drifted else "")
                    + (f"; {result.reason}" if result.reason else ""))
    else:
        headline = f"cannot judge: {result.reason}"
    return {
        "headline": headline,
        "kind": "drift", "model": model_name, "day": day.isoformat(), "record_key": key,
        "window": payload["window"], "status": result.status, "reason": result.reason or "",
        "signal": bool(result.status == "ok" and result.dataset_drift), "backfill": backfill,
        "mlflow_run_id": run_id, "mlflow_run_url": url,
        "numbers": {"drifted_share": result.drifted_share, "drift_share_threshold": result.drift_share_threshold,
                    "drifted_features": drifted, "n_current": result.n_current, "n_reference": result.n_reference,
                    "scores": {f.feature: {"method": f.method, "score": f.score, "threshold": f.threshold}
                               for f in result.features if f.drifted}},
    }


# --- signals -------------------------------------------------------------------------------------------------


def emit_signal(model_name: str, summary: dict[str, Any], context: Any) -> dict[str, Any]:
    """Signal task body: skip (no Asset event) unless the run found drift / decay and is not a backfill; otherwise
    set the outlet event's extra and send one alert."""
    from airflow.sdk.exceptions import AirflowSkipException

    from evergreen.notifiers.alert import send_signal_alert

    kind = summary["kind"]
    signal = "decay" if kind == "performance" else "drift"
    if not summary.get("signal"):
        raise AirflowSkipException(f"no {signal} signal for {summary['record_key']}: {summary['status']} "
                                   f"{summary.get('reason') or ''}".strip())
    if is_backfill(context) or summary.get("backfill"):
        raise AirflowSkipException(f"backfill run: the {kind} record {summary['record_key']} was recomputed, but a "
                                   f"backfill never emits a retrain signal or an alert")
    asset = decay_asset(model_name) if signal == "decay" else drift_asset(model_name)
    extra = {"model": model_name, "day": summary["day"], "record_key": summary["record_key"], "backfill": False,
             "signal": signal, "kind": kind, "status": summary["status"], "mlflow_run_id": summary.get("mlflow_run_id")}
    context["outlet_events"][asset].extra = extra
    deliveries = send_signal_alert(
        model=model_name, signal=signal, day=summary["day"], window=summary["window"],
        summary=summary.get("headline") or summary["reason"],
        numbers={**(summary.get("numbers") or {}), "mlflow_run_id": summary.get("mlflow_run_id")},
        record_key=f"{kind}:{summary['record_key']}", context=context, mlflow_run_url=summary.get("mlflow_run_url"),
    )
    log.info("%s signal for %s emitted; alert deliveries: %s", signal, summary["record_key"], deliveries)
    return {"extra": extra, "deliveries": deliveries}
