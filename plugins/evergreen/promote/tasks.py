"""The task bodies of ``promote_<model>`` and ``rollback_<model>``: gather the gate's facts, decide, record, move.

The decision is pure (:func:`evergreen.promote.gate.decide`); this module is its I/O: the MLflow registry (versions,
tags, aliases), the candidate's holdout in the lake, both models loaded through the platform's skops loader
(:func:`evergreen.train.modelio.load_model`), the ledger (:mod:`evergreen.promote.ledger`) and alerts.

* :func:`gate_run` -- picks the version (the candidate Asset event's, Param ``version``, or the newest version with
  status ``candidate``), scores it and the champion on the candidate's holdout, decides, logs the report (JSON,
  Markdown, HTML) on the candidate's training run, tags the version and writes a ``gate`` ledger entry. A version
  that already holds the alias its outcome would move is a no-op that says so.
* :func:`apply_run` -- moves ``champion`` (promote) or ``challenger`` (ab_test) by compare-and-set against the
  aliases the decision saw; never in a backfill or a dry run, never without the approval the report asks for
  (task ``approve``, :class:`evergreen.operators.approval.GateApprovalOperator`).
* :func:`approval_skip_reason`, :func:`record_approval` -- the approval task's facts and its ledger entry.
* :func:`rollback_run` -- moves ``champion`` back to the ledger's previous champion (or a named version that was
  champion before), records it and alerts.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from evergreen import tracking
from evergreen.config import ModelConfig
from evergreen.context import is_backfill

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from evergreen.promote.gate import GateFacts, VersionFacts

log = logging.getLogger(__name__)

NOOP = "noop"
SKIP_APPROVAL = "skip_approval"  # the Param, offered only where gate.allow_skip_approval is true
APPROVE_TASK = "approve"
HOLDOUT_URI_TAG = f"{tracking.TAG}holdout_uri"
HOLDOUT_DAYS_TAG = f"{tracking.TAG}holdout_days"
REPORT_DIR = "gate"


def _model(model_name: str) -> ModelConfig:
    from evergreen.config import get_config

    return get_config().model(model_name)


def _fail(message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def _target(hook: Any) -> Any:
    from evergreen.train.register import MlflowTarget

    return MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")


def _now() -> Any:
    """A ledger entry's time: when it happened (a retry keeps the first write's time), so entries read in order."""
    from evergreen import clock

    return clock.now()


def _run_ts(context: Any) -> Any:
    from evergreen.store.base import to_utc

    from evergreen import clock

    run = context["dag_run"]
    return clock.now(to_utc(run.run_after))


# --- which version --------------------------------------------------------------------------------------------


def pick_version(client: MlflowClient, model_name: str, context: Any) -> str:
    """The candidate Asset event's version, else Param ``version``, else the newest ``candidate`` version."""
    from evergreen.promote.registry import CANDIDATE, STATUS_TAG

    events = context.get("triggering_asset_events") or {}
    for asset_events in events.values():
        for event in sorted(asset_events, key=lambda e: str(getattr(e, "timestamp", "")), reverse=True):
            version = (dict(event.extra or {})).get("version")
            if version:
                return str(version)
    param = (context.get("params") or {}).get("version")
    if param not in (None, ""):
        return str(param)
    candidates = [v for v in tracking.versions(client, model_name) if (v.tags or {}).get(STATUS_TAG) == CANDIDATE]
    if not candidates:
        _fail(f"model '{model_name}': no version has status candidate; name one with the Param 'version'")
    return str(candidates[-1].version)


# --- the facts ------------------------------------------------------------------------------------------------


def version_facts(model: ModelConfig, version: Any) -> VersionFacts:
    """The gate's view of a registered version from its tags: window, holdout length, holdout metric interval."""
    from evergreen.promote.gate import VersionFacts
    from evergreen.stats import CI_METHODS, Interval

    tags = version.tags or {}
    prefix = f"{tracking.TAG}metric.{model.metric}"
    metrics: dict[str, Any] = {}
    try:
        value = float(tags[prefix])
        low, high = float(tags[f"{prefix}_ci_low"]), float(tags[f"{prefix}_ci_high"])
        metrics[model.metric] = Interval(value, low, high, int(tags.get(f"{tracking.TAG}holdout_rows", 0)),
                                         CI_METHODS.get(model.metric, ""), model.performance.confidence)
    except (KeyError, ValueError):
        pass  # the gate's "metric" check names what is missing
    try:
        days = int(tags[HOLDOUT_DAYS_TAG])
    except (KeyError, ValueError):
        days = None
    return VersionFacts(str(version.version), tags.get(tracking.TRAINING_WINDOW_TAG), days, metrics)


def _scores(model: ModelConfig, pipeline: Any, frame: pd.DataFrame) -> tuple[Any, Any]:
    from evergreen.train.evaluate import _positive_scores

    return _positive_scores(model, pipeline, frame[model.feature_names])


def _signature_problem(model: ModelConfig, pipeline: Any) -> str:
    names = getattr(pipeline, "feature_names_in_", None)
    if names is None:
        return ""  # judged by scoring the sample with the config's columns
    names, want = [str(n) for n in names], model.feature_names
    if names != want:
        return f"the model expects features {names}; the model config declares {want}"
    return ""


def gather_facts(model: ModelConfig, client: MlflowClient, target: Any, candidate: Any,
                 champion: Any | None) -> GateFacts:
    """Load both models, score them on the candidate's holdout, time a sample: everything :func:`decide` needs."""
    import numpy as np

    from evergreen import lake
    from evergreen.promote.gate import Comparison, GateFacts, InfraFacts, slice_facts
    from evergreen.train.evaluate import _slice_groups
    from evergreen.train.modelio import load_model
    from evergreen.train.spec import LABEL

    policy = model.gate
    cand_facts = version_facts(model, candidate)
    champ_facts = None if champion is None else version_facts(model, champion)
    holdout, holdout_error = None, ""
    uri = (candidate.tags or {}).get(HOLDOUT_URI_TAG)
    if not uri:
        holdout_error = f"version {candidate.version} has no tag {HOLDOUT_URI_TAG}: no holdout to score"
    else:
        try:
            holdout = lake.read_parquet(uri)
        except Exception as exc:  # a missing or unreadable file: the report names it
            holdout_error = f"holdout {uri} cannot be read: {exc}"
    try:
        pipeline = load_model(f"models:/{model.name}/{candidate.version}", target)
    except Exception as exc:
        infra = InfraFacts(loaded=False, load_error=f"{type(exc).__name__}: {exc}")
        return GateFacts(model.name, model.metric, cand_facts, champ_facts, infra=infra)
    problem = _signature_problem(model, pipeline)
    infra = InfraFacts(loaded=True, signature_ok=not problem, signature_problem=problem,
                       score_error=holdout_error)
    if holdout is None or problem:
        return GateFacts(model.name, model.metric, cand_facts, champ_facts, infra=infra)
    sample = holdout.head(policy.latency_sample_rows)
    try:
        started = time.perf_counter()
        _scores(model, pipeline, sample)
        latency = (time.perf_counter() - started) * 1000
        cand_score, cand_pred = _scores(model, pipeline, holdout)
    except Exception as exc:
        infra = InfraFacts(loaded=True, signature_ok=False, signature_problem=f"scoring failed: {exc}",
                           scored_rows=0, score_error=f"{type(exc).__name__}: {exc}")
        return GateFacts(model.name, model.metric, cand_facts, champ_facts, infra=infra)
    infra = InfraFacts(loaded=True, signature_ok=True, scored_rows=len(sample), latency_ms=latency)
    if champion is None:
        return GateFacts(model.name, model.metric, cand_facts, None, infra=infra)
    try:
        champ_pipeline = load_model(f"models:/{model.name}/{champion.version}", target)
        champ_score, champ_pred = _scores(model, champ_pipeline, holdout)
    except Exception as exc:  # no comparison: the gate rejects and says the champion was not scored
        log.warning("champion version %s cannot score the holdout: %s", champion.version, exc)
        return GateFacts(model.name, model.metric, cand_facts, champ_facts, infra=infra)
    comparison = Comparison(y=holdout[LABEL].to_numpy(), champion_score=champ_score, candidate_score=cand_score,
                            champion_pred=champ_pred, candidate_pred=cand_pred,
                            positive=model.label.positive_class, seed=model.training.seed)
    masks = {(feature, name): mask for feature in policy.slices
             for name, mask in _slice_groups(model, holdout, feature)}
    slices = slice_facts(model.metric, comparison, {k: np.asarray(v) for k, v in masks.items()})
    return GateFacts(model.name, model.metric, cand_facts, champ_facts, comparison, slices, infra)


# --- task: gate -----------------------------------------------------------------------------------------------


def _log_report(client: MlflowClient, run_id: str, report: Any, folder: str = REPORT_DIR) -> str:
    """The report as JSON, Markdown and HTML artifacts of the candidate's training run; the JSON's URI. A dry run
    logs under ``gate/dry_run/`` so it never replaces the report a tag and the ledger point at."""
    client.log_text(run_id, report.to_json(), f"{folder}/report.json")
    client.log_text(run_id, report.to_markdown(), f"{folder}/report.md")
    client.log_text(run_id, report.to_html(), f"{folder}/report.html")
    return f"runs:/{run_id}/{folder}/report.json"


def gate_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``gate``: decide reject / ab_test / promote for the picked version; a small dict for ``apply``."""
    from mlflow.exceptions import MlflowException

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry
    from evergreen.promote.gate import decide
    from evergreen.promote.report import AB_TEST, PROMOTE
    from evergreen.store.base import RecordConflict

    model = _model(model_name)
    params = context.get("params") or {}
    dry_run = bool(params.get("dry_run", False))
    if params.get(SKIP_APPROVAL) and not model.gate.allow_skip_approval:
        _fail(f"model '{model_name}': Param '{SKIP_APPROVAL}' is set, and the gate policy does not allow skipping "
              "the approval (gate.allow_skip_approval is false); trigger the run without it")
    hook = MlflowHook()
    client = hook.get_conn()
    version = pick_version(client, model_name, context)
    try:
        candidate = client.get_model_version(model_name, version)
    except MlflowException as exc:
        _fail(f"model '{model_name}' has no version {version!r} ({exc.message}); name a registered version")
    # MLflow's spelling, not the Param's: MLflow reads "01" or " 1" as version 1, and the alias checks below, the
    # compare-and-set in apply and the ledger compare versions as text
    version = str(candidate.version)
    aliases = tracking.aliases(client, model_name)
    champion_version = aliases.get(tracking.CHAMPION)
    challenger_version = aliases.get(tracking.CHALLENGER)
    base = {"model": model_name, "version": version, "expected_champion": champion_version,
            "expected_challenger": challenger_version, "dry_run": dry_run}
    for alias, holder in ((tracking.CHAMPION, champion_version), (tracking.CHALLENGER, challenger_version)):
        if holder == version:
            message = f"version {version} already holds alias '{alias}': nothing to decide, nothing to move"
            log.info(message)
            return {**base, "outcome": NOOP, "reason": message, "approval_required": False}
    champion = None if champion_version is None else client.get_model_version(model_name, champion_version)
    facts = gather_facts(model, client, _target(hook), candidate, champion)
    report = decide(model.gate, facts)
    log.info("gate: %s\n%s", report.summary, report.to_markdown())
    folder = f"{REPORT_DIR}/dry_run" if dry_run else REPORT_DIR
    report_uri = _log_report(client, candidate.run_id, report, folder) if candidate.run_id else ""
    alias = {PROMOTE: tracking.CHAMPION, AB_TEST: tracking.CHALLENGER}.get(report.outcome)
    result = {**base, "outcome": report.outcome, "reason": report.reason, "alias": alias,
              "approval_required": report.approval_required, "summary": report.summary, "report_uri": report_uri,
              "markdown": report.to_markdown()}
    if dry_run:
        log.info("dry run: report logged at %s; no tag, no ledger entry, nothing moved", report_uri)
        return result
    registry.tag_gate_report(client, model_name, version, report, report_uri)
    entry = ledger.LedgerEntry(
        model=model_name, event=ledger.GATE, ts=_now(), actor=ledger.Actor.from_context(context),
        previous_version=champion_version, new_version=version, reason=report.reason, outcome=report.outcome,
        report_summary=report.summary, report_uri=report_uri,
        details={"checks": {c.name: c.verdict for c in report.checks}, "backfill": is_backfill(context)},
    )
    try:
        ledger.append(StoreHook().get_conn(), entry)
    except RecordConflict as exc:  # a retry whose checks came out differently: never move on an unrecorded verdict
        _fail(f"{exc}. This run's gate already recorded another outcome for version {version}; nothing was moved. "
              "Trigger a new promote run to gate it again")
    return result


# --- task: approve (evergreen.operators.approval.GateApprovalOperator) ---------------------------------------


def _approval_skipped(model: ModelConfig, context: Any) -> bool:
    return bool(model.gate.allow_skip_approval and (context.get("params") or {}).get(SKIP_APPROVAL))


def approval_skip_reason(model_name: str, decision: dict[str, Any], context: Any) -> tuple[str, bool]:
    """Why no person is asked (empty when one is), and whether the reason is the run's ``skip_approval`` Param."""
    from evergreen.promote.report import AB_TEST, PROMOTE

    if decision["outcome"] not in (PROMOTE, AB_TEST):
        return f"outcome {decision['outcome']}: nothing would move", False
    if is_backfill(context):
        return "backfill run: a backfill never moves an alias", False
    if decision.get("dry_run"):
        return "dry run: nothing would move", False
    if not decision.get("approval_required"):
        return "the gate policy asks for no approval of this outcome", False
    if _approval_skipped(_model(model_name), context):
        who = (context.get("dag_run") and getattr(context["dag_run"], "triggering_user_name", None)) or "unknown"
        return f"Param '{SKIP_APPROVAL}' set by {who} (gate.allow_skip_approval is true)", True
    return "", False


def record_approval(model_name: str, decision: dict[str, Any], context: Any, *, answer: str, user: str | None,
                    reason: str) -> None:
    """A ledger ``approval`` entry: the outcome it answers, who answered (or that nobody did) and the report."""
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger
    from evergreen.store.base import RecordConflict

    entry = ledger.LedgerEntry(
        model=model_name, event=ledger.APPROVAL, ts=_now(), actor=ledger.Actor.from_context(context, user),
        alias=decision.get("alias"),
        previous_version=decision.get("expected_challenger" if decision.get("alias") == tracking.CHALLENGER
                                      else "expected_champion"),
        new_version=decision["version"], reason=reason, outcome=answer, report_summary=decision.get("summary", ""),
        report_uri=decision.get("report_uri", ""), details={"gate_outcome": decision["outcome"]},
    )
    try:
        ledger.append(StoreHook().get_conn(), entry)
    except RecordConflict as exc:  # an answer for this run was recorded already: the ledger never loses one
        _fail(f"{exc}. This run already recorded an answer to its approval request; nothing was moved. Trigger a "
              "new promote run to ask again")


# --- task: apply ----------------------------------------------------------------------------------------------


def apply_run(model_name: str, decision: dict[str, Any], context: Any) -> dict[str, Any]:
    """Task ``apply``: move the alias the gate's outcome names, by compare-and-set against what the gate saw."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger, registry
    from evergreen.promote.report import AB_TEST, PROMOTE

    outcome, version = decision["outcome"], decision["version"]
    done = {"model": model_name, "version": version, "outcome": outcome, "moved": False}
    if is_backfill(context):
        log.info("backfill run: a backfill never moves an alias (outcome %s for version %s)", outcome, version)
        return {**done, "reason": "backfill"}
    if outcome == NOOP:
        log.info("no-op: %s", decision["reason"])
        return {**done, "reason": decision["reason"]}
    if outcome not in (PROMOTE, AB_TEST):
        log.info("version %s was %sed: nothing to move (%s)", version, outcome, decision["reason"])
        return {**done, "reason": decision["reason"]}
    if decision.get("dry_run"):
        log.info("dry run: would %s version %s; nothing moved", outcome, version)
        return {**done, "reason": "dry run"}
    if decision.get("approval_required") and not _approval_skipped(_model(model_name), context):
        answer = context["ti"].xcom_pull(task_ids=APPROVE_TASK)
        chosen = list((answer or {}).get("chosen_options") or [])
        if chosen != ["Approve"]:
            _fail(f"version {version}: the gate policy asks for a person's approval of '{outcome}' and task "
                  f"'{APPROVE_TASK}' recorded none (answer {chosen or 'missing'}); nothing was moved")
    if decision.get("expected_challenger") is not None:
        # an A/B test is running: a second test or a new champion under it would leave its analysis without the
        # arms it started with, and the old test without a stop entry
        _fail(f"version {version}: an A/B test of version {decision['expected_challenger']} is running (alias "
              f"'challenger'); nothing was moved. Let ab_analysis_{model_name} decide it, or stop it, then "
              "promote again")
    alias = tracking.CHAMPION if outcome == PROMOTE else tracking.CHALLENGER
    expected = decision["expected_champion"] if outcome == PROMOTE else decision["expected_challenger"]
    client = MlflowHook().get_conn()
    try:
        move = registry.move_alias(client, model_name, alias, version, expected)
    except registry.AliasConflict as exc:  # final: a retry would find the alias moved again and change nothing
        _fail(str(exc))
    store = StoreHook().get_conn()
    actor = ledger.Actor.from_context(context)
    ts = _now()
    common = {"model": model_name, "ts": ts, "actor": actor, "alias": alias, "previous_version": expected,
              "new_version": version, "reason": decision.get("summary", ""), "outcome": outcome,
              "report_summary": decision.get("summary", ""), "report_uri": decision.get("report_uri", "")}
    ledger.append(store, ledger.LedgerEntry(event=ledger.ALIAS_MOVE, **common))
    if outcome == AB_TEST:
        ledger.append(store, ledger.LedgerEntry(event=ledger.AB_START, **common))
    what = "moved" if move.changed else "already pointed there (a re-run): nothing to do"
    log.info("alias '%s' of %s: %s -> %s %s", alias, model_name, expected, version, what)
    return {**done, "moved": move.changed, "alias": alias, "previous": expected,
            "reason": f"alias '{alias}' {what}"}


# --- task: rollback -------------------------------------------------------------------------------------------


def _ever_champion(history: list[Any]) -> set[str]:
    from evergreen.promote import ledger

    return {e.new_version for e in history if e.alias == tracking.CHAMPION and e.new_version is not None
            and e.event in (ledger.ALIAS_MOVE, ledger.ROLLBACK)}


def _end_test_on_rollback(client: Any, store: Any, model_name: str, challenger: str, old: str, new: str,
                          actor: Any) -> None:
    """A rollback while an A/B test runs ends the test: its champion arm is no longer the version the test started
    against, so its numbers would mix two models. The challenger alias goes (compare-and-set; the version is tagged
    retired) with ledger ``alias_move`` and ``ab_stop`` entries saying why; start a new test through
    ``promote_<model>``."""
    from evergreen.promote import ledger, registry

    why = (f"the champion was rolled back from version {old} to version {new} during the A/B test of version "
           f"{challenger}: the test's champion arm changed, so it ends (challenger retired); start a new test "
           f"through promote_{model_name}")
    move = registry.clear_alias(client, model_name, tracking.CHALLENGER, challenger, status="retired")
    common = {"model": model_name, "actor": actor, "alias": tracking.CHALLENGER, "previous_version": challenger,
              "new_version": None, "outcome": "stop", "reason": why}
    ledger.append(store, ledger.LedgerEntry(event=ledger.ALIAS_MOVE, ts=_now(), **common))
    ledger.append(store, ledger.LedgerEntry(event=ledger.AB_STOP, ts=_now(), report_summary="stop (retired: rollback)",
                                            details={"moved": move.changed}, **common))
    log.warning("%s", why)


def rollback_run(model_name: str, context: Any) -> dict[str, Any]:
    """Task ``rollback``: ``champion`` back to the previous champion (or Param ``version``, which must have been
    champion before per the ledger), by compare-and-set; a ledger ``rollback`` entry and an alert."""
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook
    from evergreen.notifiers.alert import Alert, deliver
    from evergreen.promote import ledger, registry

    if is_backfill(context):
        _fail("a backfill never moves an alias; trigger rollback by hand")
    params = context.get("params") or {}
    wanted = params.get("version")
    wanted = None if wanted in (None, "") else str(wanted)
    client = MlflowHook().get_conn()
    store = StoreHook().get_conn()
    actor = ledger.Actor.from_context(context)
    history = ledger.entries(store, model_name)
    mine = [e for e in history if e.event == ledger.ROLLBACK and e.actor.run_id == actor.run_id
            and e.actor.dag_id == actor.dag_id]
    current = tracking.aliases(client, model_name).get(tracking.CHAMPION)
    if mine:  # a retry of a rollback that was recorded: rolling back again would go one version further
        done = mine[-1]
        log.info("this run already rolled champion back from %s to %s; nothing to do", done.previous_version,
                 done.new_version)
        challenger = tracking.aliases(client, model_name).get(tracking.CHALLENGER)
        if challenger is not None and not [e for e in history if e.event == ledger.AB_STOP
                                           and e.actor.run_id == actor.run_id and e.actor.dag_id == actor.dag_id]:
            # the try that rolled back failed before it ended the running test: end it now
            _end_test_on_rollback(client, store, model_name, challenger, done.previous_version, done.new_version,
                                  actor)
        return {"model": model_name, "version": done.new_version, "previous": done.previous_version, "moved": False}
    if current is None:
        _fail(f"model '{model_name}' has no champion: nothing to roll back")
    if wanted is None:
        try:
            target = ledger.previous_champion(store, model_name, current)
        except ledger.LedgerError as exc:
            _fail(str(exc))
        if target is None:
            _fail(f"model '{model_name}': the ledger knows no champion before version {current}; name the version "
                  "to roll back to with the Param 'version'")
    else:
        if wanted not in _ever_champion(history):
            _fail(f"model '{model_name}': version {wanted} was never champion according to the ledger; a rollback "
                  "only returns to a former champion (see python -m evergreen.promote.ledger --model "
                  f"{model_name})")
        if wanted == current:
            _fail(f"model '{model_name}': version {wanted} is the champion already; nothing to roll back")
        target = wanted
    challenger = tracking.aliases(client, model_name).get(tracking.CHALLENGER)
    move = registry.move_alias(client, model_name, tracking.CHAMPION, target, current)
    reason = f"rollback of champion from version {current} to version {target}"
    ledger.append(store, ledger.LedgerEntry(model=model_name, event=ledger.ROLLBACK, ts=_now(),
                                            actor=actor, alias=tracking.CHAMPION, previous_version=current,
                                            new_version=target, reason=reason))
    if challenger is not None:
        _end_test_on_rollback(client, store, model_name, challenger, current, target, actor)
    ts = _run_ts(context)
    alert = Alert(model=model_name, signal="rollback", day=ts.date().isoformat(),
                  title=f"{model_name}: champion rolled back to version {target}", summary=reason,
                  numbers={"previous": current, "new": target}, source=dict(actor.__dict__),
                  key_suffix=f"{current}-{target}")
    deliver(alert, context, store=store)
    return {"model": model_name, "version": target, "previous": current, "moved": move.changed}
