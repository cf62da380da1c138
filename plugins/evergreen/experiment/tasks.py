"""The task bodies of ``ab_analysis_<model>``: find the test, read its matured window, analyse, record, decide.

The statistics are pure (:func:`evergreen.experiment.analysis.analyze`); this module is their I/O: the registry's
aliases (MLflow), the test's start (the ledger's ``ab_start`` entry of the challenger version, written by
``promote_<model>``), the ingestion records that say which prediction days have all their labels
(:mod:`evergreen.monitor.maturity`), the predictions and outcomes in the store, the analysis record, the SRM alert,
and the decision's compare-and-set moves and ledger entries.

* :func:`has_challenger` -- the short-circuit: no ``challenger`` alias, no test, nothing downstream runs.
* :func:`analyze_run` -- one ``ab_analysis`` record per analysis day (key ``<model>/<day>``, the day before the
  run's interval end; a re-run replaces it), with every number; an SRM alert. A backfill recomputes the record.
* :func:`apply_run` -- promote (``champion`` moved to the challenger by compare-and-set, then the ``challenger``
  alias removed) or stop (``challenger`` removed by compare-and-set, the version tagged ``rejected`` or
  ``retired``), each with ledger ``alias_move`` and ``ab_stop`` entries carrying the analysis's numbers. Never in a
  backfill; skipped when the analysis says continue or cannot decide.

The analysed window is ``[test start, E)``: ``E`` is the end of the longest run of prediction days from the start
whose landing days ``D .. D + label_delay_days`` all have an ingestion record, and at most the run's interval end
less ``label_delay_days`` (as ``evaluate_performance`` judges a day). Predictions count from the ``ab_start``
entry's time on, so the champion-only traffic of the start day never skews the sample ratio.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from evergreen import clock, tracking
from evergreen.context import airflow_info, interval_days, is_backfill

if TYPE_CHECKING:
    from evergreen.config import ModelConfig
    from evergreen.promote.ledger import LedgerEntry
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

RECORD_KIND = "ab_analysis"
SRM_SIGNAL = "srm"
#: what a record keeps of the task instance that wrote it
AIRFLOW_KEYS = ("dag_id", "run_id", "task_id", "try_number", "run_type")


def _model(model_name: str) -> ModelConfig:
    from evergreen.config import get_config

    return get_config().model(model_name)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _fail(message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def _skip(message: str) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    raise AirflowSkipException(message)


# --- task: has_challenger ------------------------------------------------------------------------------------


def has_challenger(model_name: str) -> bool:
    """The short-circuit task: True when ``challenger`` points at a version (a test runs), else False (logged)."""
    from evergreen.hooks.mlflow import MlflowHook

    current = tracking.aliases(MlflowHook().get_conn(), model_name)
    if tracking.CHALLENGER not in current:
        log.info("model '%s' has no challenger alias: no A/B test runs, nothing to analyse", model_name)
        return False
    log.info("model '%s': champion %s, challenger %s", model_name, current.get(tracking.CHAMPION),
             current[tracking.CHALLENGER])
    return True


# --- the window ----------------------------------------------------------------------------------------------


def experiment_start(store: Store, model_name: str, challenger: str) -> LedgerEntry | None:
    """The ledger's last ``ab_start`` entry of ``challenger`` (``promote_<model>`` writes it when it sets the alias)."""
    from evergreen.promote import ledger

    starts = [e for e in ledger.entries(store, model_name)
              if e.event == ledger.AB_START and e.new_version == str(challenger)]
    return starts[-1] if starts else None


def matured_end(model: ModelConfig, start: dt.date, limit: dt.date,
                ingested: dict[dt.date, dict[str, Any] | None]) -> dt.date:
    """The end (exclusive) of the longest run of prediction days from ``start``, at most ``limit``, whose labels
    have all landed: day ``D`` needs an ingestion record (not a failure) for every landing day ``D .. D + delay``."""
    from evergreen.monitor.maturity import INGESTION_FAILED

    delay = model.performance.label_delay_days
    end = start
    while end < limit:
        landing = end + dt.timedelta(days=delay)  # the one landing day that day `end` adds to the days before it
        days = [landing] if end > start else [start + dt.timedelta(days=i) for i in range(delay + 1)]
        if any(ingested.get(d) is None or str(ingested[d].get("status", "")).lower() == INGESTION_FAILED
               for d in days):
            break
        end += dt.timedelta(days=1)
    return end


def _ingestion(store: Store, model_name: str, first: dt.date, after: dt.date) -> dict[dt.date, dict[str, Any]]:
    from evergreen.ingest.tasks import RECORD_KIND as INGESTION_KIND

    out = {}
    day = first
    while day < after:  # the ingestion record of a landing day: key <model>/<day>
        rec = store.get_record(INGESTION_KIND, f"{model_name}/{day.isoformat()}")
        if rec is not None:
            out[day] = rec.payload
        day += dt.timedelta(days=1)
    return out


# --- task: analyze -------------------------------------------------------------------------------------------


def analyze_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``analyze``: the test's matured window analysed (:func:`evergreen.experiment.analysis.analyze`), one
    record per analysis day, an alert on a sample-ratio mismatch; a small dict for ``decide``."""
    import pandas as pd

    from evergreen.experiment import analysis as ab
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.monitor.maturity import label_arrival
    from evergreen.store.base import OUTCOME_COLUMNS, Record

    model = _model(model_name)
    first, after = interval_days(context)
    day = after - dt.timedelta(days=1)
    key = f"{model_name}/{day.isoformat()}"
    delay = model.performance.label_delay_days
    store: Store = StoreHook().get_conn()
    current = tracking.aliases(MlflowHook().get_conn(), model_name)
    champion, challenger = current.get(tracking.CHAMPION), current.get(tracking.CHALLENGER)
    backfill = is_backfill(context)
    limit = after - dt.timedelta(days=delay)
    started = None if challenger is None else experiment_start(store, model_name, challenger)
    start_ts = None if started is None else started.ts
    start = limit if start_ts is None else start_ts.date()
    end = start
    arrival = None
    predictions = pd.DataFrame(columns=["request_id"])
    outcomes = pd.DataFrame(columns=list(OUTCOME_COLUMNS))
    if start_ts is not None and start < limit:
        ingested = _ingestion(store, model_name, start, after)
        end = matured_end(model, start, limit, ingested)
        shown = end if end > start else start + dt.timedelta(days=1)  # what an immature window still waits for
        arrival = label_arrival(model_name, start, shown, delay, ingested)
        if end > start:
            predictions = store.read_predictions(model_name, start_ts, day_start(end))
            if not predictions.empty:
                outcomes = store.read_outcomes(model_name,
                                               request_ids=predictions["request_id"].astype(str).tolist())
    result = ab.analyze(predictions, outcomes, model, champion_version=champion, challenger_version=challenger,
                        window_start=start, window_end=end, as_of=after, labels=arrival, seed=model.training.seed)
    if challenger is not None and start_ts is None:
        result.status = ab.CANNOT_DECIDE
        result.reason = (f"challenger version {challenger} has no ab_start entry in the ledger, so the test's start "
                         "is unknown (the alias was set outside Evergreen?); start the test through promote_"
                         f"{model_name}, or remove the alias")
    elif start_ts is not None and start >= limit:
        result.status = ab.IMMATURE
        result.reason = (f"the test started {start_ts.isoformat()}; its first prediction day's labels land over "
                         f"{delay} days (label_delay_days), so the first analysable run covers "
                         f"{start + dt.timedelta(days=delay)}")
    log.info("ab_analysis %s: %s -- %s", key, result.status, result.reason)
    payload = result.to_dict()
    payload.update({"record_key": key, "interval": {"start": first.isoformat(), "end": after.isoformat()},
                    "test_start": start_ts.isoformat() if start_ts is not None else None,
                    "ab_start_entry": started.key if started is not None else None,
                    "backfill": backfill, "airflow": {k: airflow_info(context)[k] for k in AIRFLOW_KEYS}})
    existing = store.get_record(RECORD_KIND, key)
    if existing is not None and existing.payload.get("status") in (ab.PROMOTE, ab.STOP) and (
            backfill or existing.payload.get("ab_start_entry") != payload["ab_start_entry"]):
        # a decision's evidence (the ledger entry names this record): a backfill, or the analysis of another test,
        # never replaces it
        log.info("ab_analysis %s: the stored record decided %s for test %s; kept, not replaced by this %s",
                 key, existing.payload.get("status"), existing.payload.get("ab_start_entry"),
                 "backfill" if backfill else "analysis of another test")
    else:
        store.put_record(Record(RECORD_KIND, key, model_name, day_start(day), payload))
    numbers = result.numbers()
    if result.status == ab.SRM:
        _srm_alert(model_name, day, result, numbers, key, context, store)
    return {"model": model_name, "day": day.isoformat(), "record_key": key, "status": result.status,
            "stop_status": result.stop_status, "reason": result.reason, "champion": champion,
            "challenger": challenger, "backfill": backfill, "numbers": numbers}


def _srm_alert(model_name: str, day: dt.date, result: Any, numbers: dict[str, Any], key: str, context: Any,
               store: Store) -> None:
    from evergreen.links import airflow_run_url
    from evergreen.notifiers.alert import Alert, deliver

    from evergreen.config import get_config

    source = airflow_info(context)
    base = get_config().platform.airflow_base_url
    link = airflow_run_url(base, source["dag_id"], source["run_id"]) if source["dag_id"] and source["run_id"] else None
    alert = Alert(model=model_name, signal=SRM_SIGNAL, day=day.isoformat(),
                  title=f"{model_name}: A/B sample-ratio mismatch on {day.isoformat()}", summary=result.reason,
                  window={"start": result.window_start.isoformat(), "end": result.window_end.isoformat()},
                  numbers={**{f"{arm}_count": n for arm, n in result.srm.get("counts", {}).items()},
                           "counted": result.srm.get("unit"), "chi_square": result.srm.get("chi_square"),
                           "p_value": result.srm.get("p_value"), "threshold": result.srm.get("threshold"),
                           "champion_version": result.champion_version,
                           "challenger_version": result.challenger_version, "record": f"{RECORD_KIND}:{key}"},
                  links={"airflow_run": link}, source=source)
    deliver(alert, context, store=store)


# --- task: decide --------------------------------------------------------------------------------------------


def apply_run(model_name: str, summary: dict[str, Any], context: Any) -> dict[str, Any]:
    """Task ``decide``: carry out promote or stop by compare-and-set against the aliases the analysis saw, and
    record it in the ledger; skipped (never moving anything) in a backfill or when the analysis decided nothing."""
    from evergreen.experiment import analysis as ab
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry
    status = summary["status"]
    if is_backfill(context) or summary.get("backfill"):
        _skip(f"backfill run: the analysis of {summary['day']} was recomputed ({status}), but a backfill never "
              "promotes or stops a test")
    if status not in (ab.PROMOTE, ab.STOP):
        _skip(f"{status}: nothing to do -- {summary['reason']}")
    champion, challenger = summary["champion"], summary["challenger"]
    client = MlflowHook().get_conn()
    # In the pool now: the aliases must still be those the analysis saw (or already where this decision puts them,
    # a retry after the moves landed). A test replaced or a champion moved meanwhile is never decided on.
    now = tracking.aliases(client, model_name)
    seen = (now.get(tracking.CHAMPION), now.get(tracking.CHALLENGER))
    done = (challenger, None) if status == ab.PROMOTE else (champion, None)
    if seen not in ((champion, challenger), done):
        _fail(f"model '{model_name}': the analysis saw champion {champion} and challenger {challenger}, the "
              f"registry now has champion {seen[0]} and challenger {seen[1]}: someone moved an alias meanwhile. "
              f"Nothing was changed; the next ab_analysis_{model_name} run analyses the current test")
    store = StoreHook().get_conn()
    actor = ledger.Actor.from_context(context)
    ts = clock.now()  # when it happened, as every ledger entry (a retry keeps the first time)
    numbers = summary.get("numbers") or {}
    details = {"numbers": numbers, "record": f"{RECORD_KIND}:{summary['record_key']}"}
    common = {"model": model_name, "ts": ts, "actor": actor, "reason": summary["reason"], "details": details}
    try:
        moved = _moves(client, model_name, status, champion, challenger, summary, store, common)
    except registry.AliasConflict as exc:  # final: a retry would find the alias moved again and change nothing
        _fail(str(exc))
    what = (f"champion {champion} -> {challenger}, challenger alias removed" if status == ab.PROMOTE
            else f"challenger alias removed, version {challenger} tagged {summary['stop_status']}")
    log.info("ab_analysis %s: %s: %s", summary["record_key"], status, what)
    return {"model": model_name, "status": status, "stop_status": summary.get("stop_status"),
            "champion": challenger if status == ab.PROMOTE else champion, "previous_champion": champion,
            "challenger": challenger, "moved": any(moved), "what": what}


def _moves(client: Any, model_name: str, status: str, champion: str, challenger: str, summary: dict[str, Any],
           store: Store, common: dict[str, Any]) -> list[bool]:
    """The compare-and-set moves of a decision and their ledger entries, in that order."""
    from evergreen.experiment import analysis as ab
    from evergreen.promote import ledger, registry

    moved = []
    if status == ab.PROMOTE:
        move = registry.move_alias(client, model_name, tracking.CHAMPION, challenger, champion)
        moved.append(move.changed)
        if champion != challenger:
            ledger.append(store, ledger.LedgerEntry(event=ledger.ALIAS_MOVE, alias=tracking.CHAMPION,
                                                    previous_version=champion, new_version=challenger,
                                                    outcome=ab.PROMOTE, **common))
        # the challenger is champion now: its alias goes, its status stays champion
        move = registry.clear_alias(client, model_name, tracking.CHALLENGER, challenger, status=None)
    else:
        move = registry.clear_alias(client, model_name, tracking.CHALLENGER, challenger,
                                    status=summary["stop_status"])
    moved.append(move.changed)
    ledger.append(store, ledger.LedgerEntry(event=ledger.ALIAS_MOVE, alias=tracking.CHALLENGER,
                                            previous_version=challenger, new_version=None, outcome=status, **common))
    ledger.append(store, ledger.LedgerEntry(
        event=ledger.AB_STOP, alias=tracking.CHALLENGER, previous_version=challenger, new_version=None,
        outcome=status, report_summary=f"{status}" + (f" ({summary['stop_status']})" if summary.get("stop_status")
                                                       else ""), **common))
    return moved
