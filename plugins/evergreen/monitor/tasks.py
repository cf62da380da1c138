"""The task bodies of ``monitor_drift_<model>`` and ``evaluate_performance_<model>``: read the run's window, call the
pure engines (:mod:`evergreen.monitor.drift`, :mod:`evergreen.monitor.performance`), record the result, log it to
MLflow, signal.

Every function here takes the model name and the Airflow task context and is called from inside a task, so the
heavy libraries are imported inside the functions. What is computed depends only on the run's data interval and
the data, never on the wall clock, and every write is an upsert keyed by the interval:

* the platform record ``(kind, f"{model}/{day}")`` -- ``day`` is the (last) day of the predictions judged;
* one MLflow run per ``(kind, model, day)`` in the experiment ``evergreen/<model>/monitoring``, updated in place
  (:mod:`evergreen.monitor.runs` says how a re-run is told apart from new data).

The signal tasks raise ``AirflowSkipException`` when there is nothing to signal or the run is a backfill (a skipped
task emits no Asset event, so ``retrain`` never hears of it); otherwise they set the Asset event's ``extra`` and send
one alert.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from evergreen import lake, tracking
from evergreen.context import airflow_info, interval_days, is_backfill
from evergreen.dag_common import decay_asset, drift_asset
from evergreen.experiment.policy import SHADOW_ARM
from evergreen.monitor.runs import monitoring_experiment, run_url, upsert_monitoring_run, version_baseline

if TYPE_CHECKING:
    import pandas as pd
    from evergreen.config import ModelConfig
    from evergreen.monitor.drift import DriftResult
    from evergreen.monitor.reference import ReferenceStats
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

#: what a record keeps of the task instance that wrote it
AIRFLOW_KEYS = ("dag_id", "run_id", "task_id", "try_number", "run_type")


def answered(predictions: pd.DataFrame) -> pd.DataFrame:
    """The rows that answered a request: a shadow test's challenger rows (arm ``shadow``, request id
    ``<id>~shadow``) repeat the champion row's features and have no outcome of their own, so drift and live
    performance leave them out (``ab_analysis`` pairs them with the champion's rows)."""
    if predictions.empty or "arm" not in predictions:
        return predictions
    keep = predictions["arm"].astype(object) != SHADOW_ARM
    return predictions if bool(keep.all()) else predictions.loc[keep].reset_index(drop=True)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _model(model_name: str) -> ModelConfig:
    from evergreen.config import get_config

    return get_config().model(model_name)


def _airflow_record(context: Any) -> dict[str, Any]:
    info = airflow_info(context)
    return {k: info[k] for k in AIRFLOW_KEYS}


# --- evaluate_performance ------------------------------------------------------------------------------------


def evaluate_performance_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``evaluate`` of ``evaluate_performance_<model>``: judge the window whose labels have landed, record,
    log to MLflow. Whether they have is read from the ``ingestion`` records of the landing days they arrive on."""
    import pandas as pd

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.ingest.tasks import RECORD_KIND as INGESTION_KIND
    from evergreen.monitor.maturity import label_arrival, label_landing_days
    from evergreen.monitor.performance import evaluate_performance, evaluation_window
    from evergreen.store.base import OUTCOME_COLUMNS, Record

    model = _model(model_name)
    first, after = interval_days(context)
    start, end = evaluation_window(first, after, model.performance)
    day = end - dt.timedelta(days=1)
    key = f"{model_name}/{day.isoformat()}"
    store: Store = StoreHook().get_conn()
    delay = model.performance.label_delay_days
    ingested = {}
    for d in label_landing_days(start, end, delay):  # the ingestion record of a landing day: key <model>/<day>
        rec = store.get_record(INGESTION_KIND, f"{model_name}/{d.isoformat()}")
        if rec is not None:
            ingested[d] = rec.payload
    labels = label_arrival(model_name, start, end, delay, ingested)
    log.info("performance %s: %s", key, labels.describe())
    predictions = answered(store.read_predictions(model_name, day_start(start), day_start(end)))
    if predictions.empty:
        outcomes = pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    else:
        outcomes = store.read_outcomes(model_name, request_ids=predictions["request_id"].astype(str).tolist())

    hook = MlflowHook()
    client = hook.get_conn()
    champion = judged_champion(client, store, model_name, context, end)
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
        predictions, outcomes, model, window_start=start, window_end=end, as_of=after, labels=labels,
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
    experiment = hook.experiment_id(monitoring_experiment(model_name))
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
    url = run_url(hook, experiment, run_id)
    payload.update({"record_key": key, "interval": {"start": first.isoformat(), "end": after.isoformat()},
                    "backfill": backfill, "mlflow": {"experiment_id": experiment, "run_id": run_id, "url": url},
                    "airflow": _airflow_record(context)})
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


def reference_fingerprint_problem(reference: ReferenceStats, version: Any, uri: str) -> str | None:
    """Why ``reference`` (loaded from ``uri``) is not the reference of ``version``, or None when it is.

    A reference built from training rows carries their fingerprint, which must equal the version's
    ``evergreen.data_fingerprint`` tag; so must any reference of a version tagged with ``evergreen.reference_uri``.
    Only a lake-window rebuild of a version registered before references were built at registration (no
    fingerprint, no reference tag) is accepted unchecked -- and recorded as such.
    """
    from evergreen.monitor.reference import REFERENCE_URI_TAG
    from evergreen.tracking import DATA_FINGERPRINT_TAG

    tags = getattr(version, "tags", None) or {}
    expected = tags.get(DATA_FINGERPRINT_TAG) or None
    stored = reference.data_fingerprint or None
    if stored is None and REFERENCE_URI_TAG not in tags:
        return None
    if stored == expected:
        return None
    return (f"the reference statistics at {uri} were built from training data with fingerprint {stored or 'none'}, "
            f"but champion version {version.version} was trained on data with fingerprint {expected or 'none'} (tag "
            f"{DATA_FINGERPRINT_TAG}): they describe other data (a version number reused by a new registry, or a "
            "reference replaced by hand), so drift is not judged against them; retrain to register a version with "
            "its own reference")


def champion_reference(model: ModelConfig, version: Any, store: Store) -> tuple[ReferenceStats, str, bool]:
    """The champion's reference statistics: the ones saved when it was registered (built from its training rows),
    checked against its data fingerprint.

    Returns ``(reference, uri, built_now)``. Raises :class:`CannotJudge` when the version's reference is missing
    or its fingerprint does not match the version's -- never a silent rebuild. One path builds a reference here:
    a version registered before references were built at registration (no ``evergreen.reference_uri`` tag, nothing
    at ``lake.reference_dir``) gets one built once from its training window in the lake, as before, recorded with
    ``source: lake_window`` and no fingerprint (whatever the lake holds now, not necessarily its training rows).
    """
    from evergreen.monitor.reference import (
        REFERENCE_URI_TAG,
        SOURCE_LAKE_WINDOW,
        build_reference,
        load_reference,
        save_reference,
    )
    from evergreen.store.base import Record

    tagged = (getattr(version, "tags", None) or {}).get(REFERENCE_URI_TAG)
    uri = tagged or lake.reference_dir(model.name, version.version)
    try:
        reference = load_reference(uri)
    except FileNotFoundError:
        if tagged:
            raise CannotJudge(
                f"champion version {version.version}: its reference statistics are missing at {uri} (tag "
                f"{REFERENCE_URI_TAG}); they are built from the version's training rows when it is registered and "
                "are not rebuilt from whatever the lake holds now. Restore them, or retrain to register a version "
                "with its own reference") from None
        reference = None
    if reference is not None:
        problem = reference_fingerprint_problem(reference, version, uri)
        if problem:
            raise CannotJudge(problem)
        return reference, uri, False
    log.warning("%s version %s has no reference statistics from its registration (registered before they were "
                "built at registration); building them once from its training window in the lake", model.name,
                version.version)
    try:
        start, end = tracking.version_window(version)
    except ValueError as exc:
        raise CannotJudge(f"the champion's training data cannot be located to build its reference: {exc}") from None
    from evergreen.corrections import read_labelled

    train, parts = read_labelled(model.name, start, end)  # one row per request id, as training reads the window
    if train.empty:
        raise CannotJudge(f"champion version {version.version}: no labelled partitions in the lake for its training "
                          f"window [{start}, {end}) to build its reference from")
    ref = build_reference(train, model, model.drift.report_sample_size, version=version.version,
                          source=SOURCE_LAKE_WINDOW)
    save_reference(ref, uri)
    store.put_record(Record("reference", f"{model.name}/version={version.version}", model.name, day_start(end),
                            {**ref.summary(), "uri": uri, "training_window": [start.isoformat(), end.isoformat()],
                             "partitions": parts, "fingerprint_checked": False,
                             "why": "the version was registered without reference statistics (before they were "
                                    "built at registration): built once by monitor_drift from the lake's rows of "
                                    "its training window, which are not necessarily the rows it trained on"}))
    log.info("built the reference of %s version %s from %d rows of %d partitions", model.name, version.version,
             len(train), len(parts))
    return ref, uri, True


def _cannot_judge_drift(model: ModelConfig, reason: str, n_current: int) -> DriftResult:
    from evergreen.monitor.drift import DriftResult

    return DriftResult(status="cannot_judge", dataset_drift=None, drifted_share=None,
                       drift_share_threshold=model.drift.drift_share, features=(), reason=reason, n_reference=0,
                       n_current=n_current)


def judged_champion(client: Any, store: Store, model_name: str, context: Any, as_of: dt.date) -> Any | None:
    """The champion version a run judges: the registry's now; in a backfill, the one the ledger says held the alias
    at the start of ``as_of`` (the end of the judged days), so a backfill recomputes that day's fact -- against the
    model that served it -- whatever has been promoted since. Without a ledger entry, the registry's."""
    if is_backfill(context):
        from evergreen.promote import ledger

        version = ledger.champion_at(store, model_name, day_start(as_of))
        if version is not None:
            return client.get_model_version(model_name, version)
    return tracking.alias_version(client, model_name, tracking.CHAMPION)


def monitor_drift_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``detect`` of ``monitor_drift_<model>``: the interval's logged features against the champion's reference."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.monitor.drift import compute_drift
    from evergreen.monitor.report import drift_report_html
    from evergreen.store.base import Record

    model = _model(model_name)
    first, after = interval_days(context)
    day = after - dt.timedelta(days=1)
    key = f"{model_name}/{day.isoformat()}"
    store: Store = StoreHook().get_conn()
    predictions = answered(store.read_predictions(model_name, day_start(first), day_start(after)))
    current = predictions[[c for c in model.feature_names if c in predictions.columns]]
    hook = MlflowHook()
    client = hook.get_conn()
    champion = judged_champion(client, store, model_name, context, after)
    reference = None
    reference_info: dict[str, Any] = {}
    if champion is None:
        result = _cannot_judge_drift(model, f"no champion: model '{model_name}' has no version with alias "
                                     "'champion', so there is no reference to compare with", len(current))
    else:
        try:
            reference, uri, built = champion_reference(model, champion, store)
            reference_info = {"version": str(champion.version), "uri": uri, "built_now": built,
                              "n_rows": reference.n_rows, "source": reference.source,
                              "data_fingerprint": reference.data_fingerprint,
                              "fingerprint_checked": reference.data_fingerprint is not None}
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
    experiment = hook.experiment_id(monitoring_experiment(model_name))
    run_id = upsert_monitoring_run(client, experiment, key=f"drift/{key}", run_name=f"drift-{day.isoformat()}",
                                   ts=day_start(first), metrics=metrics, tags=tags, texts=texts,
                                   params={"drift_share": model.drift.drift_share,
                                           "report_sample_size": model.drift.report_sample_size})
    url = run_url(hook, experiment, run_id)
    payload = json.loads(json.dumps(payload, default=str))  # numpy scalars and tuples as JSON values
    payload.update({"record_key": key, "model": model_name,
                    "window": {"start": first.isoformat(), "end": after.isoformat()}, "reference": reference_info,
                    "report": report[1] if report is not None else ({"error": report_error} if report_error else None),
                    "backfill": backfill,
                    "mlflow": {"experiment_id": experiment, "run_id": run_id, "url": url},
                    "airflow": _airflow_record(context)})
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
