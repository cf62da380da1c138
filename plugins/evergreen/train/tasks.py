"""The task bodies of ``retrain_<model>``: gather the facts, apply the retrain policy, record the decision, and
publish the candidate the training pipeline registered.

The policy itself is pure (:mod:`evergreen.train.policy`); this module is its I/O: the store (decision records),
the MLflow registry (champion, challenger, latest version and its training window) and the lake (new labelled rows).
Each function takes the Airflow context and is idempotent for a DAG run: the decision record is keyed by the run,
so re-running ``decide`` replaces it (and never sees itself as "the last retrain").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from evergreen import clock, lake, tracking
from evergreen.config import ModelConfig
from evergreen.context import RUN_ASSET, RUN_BACKFILL, RUN_MANUAL, RUN_SCHEDULED, is_backfill, run_type
from evergreen.train.policy import Decision, Facts, Trigger, decide, signal_from_event, training_window
from evergreen.train.register import STATUS_CANDIDATE

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.store.base import Store

log = logging.getLogger(__name__)

KIND = "retrain_decision"


def _model(model_name: str) -> ModelConfig:
    from evergreen.config import get_config

    return get_config().model(model_name)


def record_key(model: str, run_id: str) -> str:
    return f"{model}/{run_id}"


# --- the trigger ----------------------------------------------------------------------------------------------


def _run_type(context: Any) -> str:
    """The run's type as the policy knows it; any other kind of run counts as a person asking (manual)."""
    if is_backfill(context):
        return RUN_BACKFILL
    value = run_type(context)
    return value if value in (RUN_MANUAL, RUN_SCHEDULED, RUN_ASSET) else RUN_MANUAL


def trigger_from_context(context: Any) -> Trigger:
    """What started this run: its type, its Asset events (backfill-originated ones marked) and the Params."""
    params = context.get("params") or {}
    signals = []
    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in asset_events:
            signals.append(signal_from_event(event.asset.uri, dict(event.extra or {}),
                                             event.source_dag_id, event.source_run_id))
    return Trigger(
        run_type=_run_type(context),
        signals=tuple(signals),
        force=bool(params.get("force", False)),
        dry_run=bool(params.get("dry_run", False)),
    )


# --- the facts ------------------------------------------------------------------------------------------------


def _registry(client: MlflowClient, model: str) -> tuple[dict[str, str], Any | None, str | None]:
    """(aliases -> version, newest version, the candidate waiting at the gate) of a registered model; empty when it
    does not exist yet. The waiting candidate is the newest version newer than the champion whose status is still
    ``candidate`` and that holds no alias."""
    aliases = tracking.aliases(client, model)
    versions = tracking.versions(client, model)
    champion = int(aliases[tracking.CHAMPION]) if tracking.CHAMPION in aliases else 0
    held = set(aliases.values())
    waiting = [v for v in versions if int(v.version) > champion and str(v.version) not in held
               and (v.tags or {}).get(f"{tracking.TAG}status") == STATUS_CANDIDATE]
    return aliases, versions[-1] if versions else None, str(waiting[-1].version) if waiting else None


def _window_end(version: Any) -> dt.date | None:
    """The end of the window a version was trained on; None when its tag is missing or unreadable (then every
    row of the requested window counts as new)."""
    try:
        return tracking.version_window(version)[1]
    except ValueError:
        return None


def last_retrain_at(store: Store, model: str, own_key: str) -> dt.datetime | None:
    """When the last decision that launched a training was taken (dry runs and this run's own record excluded)."""
    times = [r.ts for r in store.list_records(KIND, model)
             if r.key != own_key and r.payload.get("retrain") and not r.payload.get("dry_run")]
    return max(times) if times else None


def gather_facts(
    model: ModelConfig,
    *,
    store: Store,
    client: MlflowClient,
    now: dt.datetime,
    window: tuple[dt.date, dt.date],
    own_key: str,
    lake_root: str | None = None,
) -> Facts:
    aliases, latest, waiting = _registry(client, model.name)
    champion = aliases.get(tracking.CHAMPION)
    champion_created = None
    if champion is not None:
        created_ms = client.get_model_version(model.name, champion).creation_timestamp
        champion_created = dt.datetime.fromtimestamp(created_ms / 1000, tz=dt.timezone.utc)
    # new data = labelled rows newer than the last trained window (every row of the window when none was trained)
    since = (_window_end(latest) if latest is not None else None) or window[0]
    rows = lake.partition_rows(model.name, "labelled", since, window[1], root=lake_root) if since < window[1] else {}
    return Facts(
        now=now,
        last_retrain_at=last_retrain_at(store, model.name, own_key),
        champion_version=champion,
        champion_created_at=champion_created,
        challenger_version=aliases.get(tracking.CHALLENGER),
        latest_version=None if latest is None else str(latest.version),
        pending_candidate=waiting,
        new_rows=sum(rows.values()),
        new_rows_since=since,
    )


# --- task: decide ---------------------------------------------------------------------------------------------


def decide_run(model_name: str, context: Any) -> dict[str, Any] | None:
    """Task ``decide``: the training plan when the policy says retrain (and it is not a dry run), else None.

    The decision is recorded either way (kind ``retrain_decision``, key ``<model>/<run_id>``, ts = the run's
    ``run_after``). Unusable Params fail the task at once, naming the parameter.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.store.base import Record, to_utc
    from evergreen.train.policy import RetrainParamsError, flag
    from evergreen.train.spec import TrainingError, check_hyperparameters

    model = _model(model_name)
    run = context["dag_run"]
    params = context.get("params") or {}
    # "now" of the policy (cooldown, champion age) and the default window end of a run without a logical date
    # (manual, asset-triggered): the run's run_after, or the simulated clock of the demo (evergreen.clock)
    now = clock.now(to_utc(run.run_after))
    reference = to_utc(run.logical_date).date() if run.logical_date else now.date()
    # The Param schemas bound types, formats and ranges at trigger time; what they cannot express (the window's
    # order and length, the names and values the estimator accepts) is checked here, before any pipeline starts.
    days = params.get("window_days")
    try:
        window = training_window(reference, params.get("window_start"), params.get("window_end"),
                                 model.retrain.training_window_days if days is None else days)
        for name in ("force", "dry_run"):
            flag(params, name)
        hyperparameters = check_hyperparameters(model, params.get("hyperparameters") or {})
    except (RetrainParamsError, TrainingError) as exc:
        raise AirflowFailException(str(exc)) from None
    key = record_key(model_name, run.run_id)
    trigger = trigger_from_context(context)
    mlflow = MlflowHook()
    store = StoreHook().get_conn()
    facts = gather_facts(model, store=store, client=mlflow.get_conn(), now=now, window=window, own_key=key)
    decision = decide(trigger, facts, model.retrain)
    plan = {
        "model": model_name,
        "record_key": key,
        "reason": decision.reason,
        "window_start": window[0].isoformat(),
        "window_end": window[1].isoformat(),
        "hyperparameters": hyperparameters,
    }
    store.put_record(Record(KIND, key, model_name, now, _payload(decision, trigger, plan, context)))
    log.info("%s: %s -- %s", "RETRAIN" if decision.retrain else "no retrain", decision.reason, decision.message)
    if not decision.retrain:
        return None
    if trigger.dry_run:
        log.info("dry run: decision recorded as %s, nothing trained", key)
        return None
    plan["arguments"] = pipeline_arguments(model_name, window, hyperparameters, context, mlflow)
    return plan


def _plan_window(plan: dict[str, Any]) -> str:
    """The plan's training window written as the version tag writes it."""
    return tracking.window_tag(dt.date.fromisoformat(plan["window_start"]), dt.date.fromisoformat(plan["window_end"]))


def _payload(decision: Decision, trigger: Trigger, plan: dict[str, Any], context: Any) -> dict[str, Any]:
    ti = context.get("ti")
    return {
        **decision.to_dict(),
        "dry_run": trigger.dry_run,
        "window": _plan_window(plan),
        "hyperparameters": plan["hyperparameters"],
        "airflow": {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None),
                    "run_type": trigger.run_type},
        "outcome": None,
    }


def pipeline_arguments(model_name: str, window: tuple[dt.date, dt.date], hyperparameters: dict[str, Any],
                       context: Any, mlflow: Any) -> dict[str, Any]:
    """The training pipeline's parameters (include/pipelines/training.py) for this run.

    They reach XCom, the local runner's arguments file and a Kubeflow run, so they hold no credential (the hook's
    URIs carry none; the runner hands the steps MLflow's credentials through their environment) and nothing that
    exists only on this worker: the model config travels as content, the lake as its URI.
    """
    from evergreen.paths import lake_uri
    from evergreen.train.steps import model_config_content

    ti = context["ti"]
    return {
        "model": model_name,
        "window_start": window[0].isoformat(),
        "window_end": window[1].isoformat(),
        "model_config": model_config_content(_model(model_name)),
        "hyperparameters": json.dumps(hyperparameters, sort_keys=True),
        "mlflow_tracking_uri": mlflow.tracking_uri,
        "mlflow_registry_uri": mlflow.registry_uri,
        "mlflow_artifact_location": mlflow.artifact_location or "",
        "lake_root": lake_uri(),
        "airflow_dag_id": ti.dag_id,
        "airflow_run_id": ti.run_id,
    }


# --- task: register_candidate ---------------------------------------------------------------------------------


def candidate_run(model_name: str, plan: dict[str, Any], result: dict[str, Any], context: Any) -> dict[str, Any]:
    """Task ``register_candidate``: the version the pipeline registered, published as the candidate Asset event.

    The version comes from the pipeline's output (local runs) or, where the Kubeflow API cannot return outputs,
    from MLflow by this run's lineage tags. Nothing registered (the holdout metric missed the sanity floor): the
    task skips and no event is emitted. The outcome is added to the decision record.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from evergreen.dag_common import candidate_asset
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.store.base import Record
    from evergreen.train.register import find_registered_version

    outputs = result.get("outputs") or {}
    ti = context["ti"]
    if "Output" in outputs:
        version = str(outputs["Output"] or "") or None
    else:
        found = find_registered_version(MlflowHook().get_conn(), model_name, airflow_run_id=ti.run_id)
        version = None if found is None else str(found.version)
    store = StoreHook().get_conn()
    record = store.get_record(KIND, plan["record_key"])
    outcome = {"candidate_version": version, "kfp_run_id": result.get("run_id"), "kfp_mode": result.get("mode")}
    if record is not None:
        payload = {**record.payload, "outcome": outcome}
        store.put_record(Record(record.kind, record.key, record.model, record.ts, payload))
    if version is None:
        raise AirflowSkipException(
            f"the training run {result.get('run_id')} registered no version (the holdout metric missed "
            "training.sanity_floor); no candidate event"
        )
    extra = {
        "model": model_name,
        "version": version,
        "record_key": plan["record_key"],
        "backfill": False,
        "training_window": _plan_window(plan),
        "reason": plan["reason"],
        "airflow_run_id": ti.run_id,
        "kfp_run_id": result.get("run_id"),
        "mlflow_run_id": result.get("mlflow_run_id"),
    }
    context["outlet_events"][candidate_asset(model_name)].extra = extra
    log.info("candidate version %s of %s registered from window %s", version, model_name, extra["training_window"])
    return extra
