"""The demo's terminal report: what a step did, read back from the store and the registry, for people.

Printing only: every figure shown is read from a record, a lake partition or a model version, so the output says
what the platform recorded (tests/test_demo.py checks the two agree).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evergreen import lake, tracking
from evergreen_demo.digest import state_fingerprint
from evergreen_demo.runner import Demo, latest_candidate, say

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.config import ModelConfig
    from evergreen.store.base import Record


def print_decision(record: Record) -> None:
    p = record.payload
    d = p.get("details") or {}
    verdict = "RETRAIN" if p["retrain"] else "NO RETRAIN"
    say(f"      decision {record.kind} {record.key}: {verdict} (reason '{p['reason']}')")
    say(f"        {p['message']}")
    facts = [f"window {p['window']}", f"{d.get('new_rows')} new labelled rows since {d.get('new_rows_since')} "
             f"(min_new_rows {d.get('min_new_rows')})", f"cooldown {d.get('cooldown_hours'):g} h"]
    if d.get("last_retrain_at"):
        facts.append(f"last retrain {d['last_retrain_at']} ({d.get('hours_since_last_retrain')} h ago)")
    facts.append(f"champion {d.get('champion_version') or 'none'}, latest version {d.get('latest_version') or 'none'}")
    say(f"        facts: {'; '.join(facts)}")
    outcome = p.get("outcome")
    if outcome:
        say(f"        outcome: candidate version {outcome.get('candidate_version') or 'none'} from Kubeflow run "
            f"{outcome.get('kfp_run_id')} ({outcome.get('kfp_mode')})")


def _metric_tags(model: ModelConfig, tags: dict[str, str]) -> tuple[float, float, float] | None:
    m = f"evergreen.metric.{model.metric}"
    try:
        return float(tags[m]), float(tags[f"{m}_ci_low"]), float(tags[f"{m}_ci_high"])
    except (KeyError, ValueError):
        return None


def print_version(client: MlflowClient, model: ModelConfig, version: str) -> None:
    mv = client.get_model_version(model.name, version)
    tags = dict(mv.tags or {})
    run = client.get_run(mv.run_id)
    metrics = run.data.metrics
    m = model.metric
    say(f"        holdout {m} {metrics[f'holdout_{m}']:.4f} (95% CI {metrics[f'holdout_{m}_ci_low']:.4f} .. "
        f"{metrics[f'holdout_{m}_ci_high']:.4f}) on {tags.get('evergreen.holdout_rows')} holdout rows, trained on "
        f"{tags.get('evergreen.training_rows')} rows; sanity floor {model.training.sanity_floor}")
    say(f"        MLflow run {mv.run_id} (experiment evergreen/{model.name}/training), model {mv.source}")
    say("        lineage tags:")
    for key in ("status", "airflow_dag_id", "airflow_run_id", "kfp_run_id", "training_window", "data_fingerprint",
                "holdout_uri", f"metric.{m}", "estimator", "hyperparameters"):
        say(f"          evergreen.{key} = {tags.get(f'evergreen.{key}', '(missing)')}")


def print_aliases(client: MlflowClient, model: str) -> None:
    aliases = tracking.aliases(client, model)
    shown = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
    waits = "; the candidate waits for it" if latest_candidate(client, model) is not None else ""
    say(f"      registry aliases of '{model}': {shown} -- only promote_{model} (not run by this demo yet) moves "
        f"{' / '.join(repr(a) for a in tracking.ALIASES)}{waits}")


def print_monitoring(model: ModelConfig, record: Record, *, detail: bool) -> None:
    p = record.payload
    say(f"      {record.kind} {record.key}: {p['status']} -- {p.get('reason') or '-'}")
    if not detail:
        return
    where = f"MLflow run {p['mlflow']['run_id']} (experiment evergreen/{model.name}/monitoring)"
    if record.kind == "drift":
        reference = p.get("reference") or {}
        against = (f"the reference of version {reference['version']} ({reference.get('n_rows')} rows)"
                   if reference.get("version") else "no reference")
        say(f"        window {p['window']['start']}/{p['window']['end']}: {p.get('n_current')} logged rows against "
            f"{against}; {where}")
        return
    say(f"        predictions {p['window']['start']}/{p['window']['end']}: {p['n_predictions']} logged, "
        f"{p['n_labelled']} labelled, {p['n_usable']} usable; {where}")
    groups = p.get("groups") or []
    whole = next((g for g in groups if g["by"] == "all"), None)
    if whole is not None and whole.get("estimate"):
        est = whole["estimate"]
        say(f"        live {model.metric} of the window: {est['value']:.4f} ({est['ci_low']:.4f} .. "
            f"{est['ci_high']:.4f}, {est['method']}) on {whole['n_usable']} rows"
            + (" -- recorded; with no champion there is no offline baseline to judge it against"
               if p.get("champion_version") is None else ""))
    served = {by: ", ".join(f"{g['value']} ({g['n_predictions']})" for g in groups if g["by"] == by)
              for by in ("version", "arm")}
    say(f"        served by version: {served['version'] or '-'}; arm: {served['arm'] or '-'}")


def summary(demo: Demo) -> None:
    """The report step: ingestion, the retrain decision and candidate, the monitoring verdicts, the fingerprint."""
    import pandas as pd

    from evergreen.ingest.tasks import RECORD_KIND

    model = demo.model
    say("      ingestion")
    say(f"      {'day':<11} {'files':>5} {'empty':>5} {'rows':>6} {'landed':>6} {'quarantined':>11} "
        f"{'unmatched':>9}  reasons")
    quarantines = []
    for day in demo.landing_days:
        record = demo.store.get_record(RECORD_KIND, f"{model.name}/{day}")
        if record is None:
            say(f"      {day}  (not ingested)")
            continue
        p = record.payload
        reasons = ", ".join(f"{k}={v}" for k, v in p["reasons"].items()) or "-"
        say(f"      {str(day):<11} {len(p['files']):>5} {len(p['empty_files']):>5} {p['rows_read']:>6} "
            f"{p['landed']:>6} {p['quarantined']:>11} {p['unmatched']:>9}  {reasons}")
        if p["quarantined"]:
            q = lake.read_parquet(p["quarantine_uri"])
            quarantines.append((day, p["quarantine_uri"], q))
    for day, uri, q in quarantines:
        say(f"\n      quarantined on {day} ({uri}):")
        # rows of one file sharing a reason (a whole file quarantined for a column) are shown once
        for (source, code, reason), rows in q.groupby(["source_file", "reason_code", "reason"], sort=False):
            numbers = rows["row_number"].tolist()
            where = f"row {numbers[0]}" if len(numbers) == 1 else f"rows {', '.join(map(str, numbers))}"
            reason = reason if len(reason) <= 400 else reason[:397] + "..."
            say(f"        {source.rsplit('/', 1)[-1]} {where} [{code}] {reason}")
    labelled = [lake.read_parquet(lake.labelled_path(model.name, d)) for d in demo.landing_days
                if lake.exists(lake.labelled_path(model.name, d))]
    if labelled:
        frame = pd.concat(labelled, ignore_index=True)
        say(f"\n      labelled examples in the lake: {len(frame)} rows "
            f"({', '.join(f'{k}={v}' for k, v in frame['source'].value_counts().sort_index().items())}) under "
            f"{lake.partition_dir(model.name, 'labelled', '*').replace('dt=*', '')}")

    say("\n      retraining")
    _report_retrain(demo)
    say("\n      monitoring")
    for kind in ("drift", "performance"):
        record = demo.store.get_record(kind, f"{model.name}/{demo.last_day}")
        if record is None:
            say(f"      {kind} {model.name}/{demo.last_day}: not run")
        else:
            print_monitoring(model, record, detail=False)

    fingerprint = state_fingerprint(demo)
    say(f"\n      state fingerprint: {fingerprint}")
    say("        covers: store outcomes, predictions and ingestion records; lake partitions; the candidate's training "
        "window, data fingerprint, holdout metric and hyper-parameters; the drift and performance records")
    say("        leaves out what differs from run to run: the retrain decision records (one per manual trigger, timed "
        "by the wall clock), version numbers, Airflow, Kubeflow and MLflow run ids and times; paths are written as "
        "<home>, <lake>, <landing>, <checkout>")
    demo.notes["fingerprint"] = fingerprint


def _report_retrain(demo: Demo) -> None:
    from evergreen.train.tasks import KIND

    model = demo.model
    decisions = sorted(demo.store.list_records(KIND, model.name), key=lambda r: (r.ts, r.key))
    if not decisions:
        say("      no retrain decision recorded yet")
        return
    # this demo run's decision when it ran the retrain step, else the newest one
    mine = next((r for r in decisions if r.key == demo.notes.get("decision_key")), None)
    p = (mine or decisions[-1]).payload
    which = "this run's decision" if mine else "latest decision"
    say(f"      {which}: {'RETRAIN' if p['retrain'] else 'NO RETRAIN'} ({p['reason']}): {p['message']}")
    history = ", ".join(r.payload["reason"] + ("" if r.payload["retrain"] else " (refused)") for r in decisions)
    say(f"      decisions recorded for '{model.name}': {len(decisions)} ({history})")
    client = demo.registry()
    candidate = latest_candidate(client, model.name)
    if candidate is None:
        say("      no candidate version registered")
        return
    metric = _metric_tags(model, dict(candidate.tags or {}))
    shown = f"holdout {model.metric} {metric[0]:.4f} ({metric[1]:.4f} .. {metric[2]:.4f})" if metric else ""
    say(f"      candidate: '{model.name}' version {candidate.version}, window "
        f"{candidate.tags.get(tracking.TRAINING_WINDOW_TAG)}, {shown}; registered by Airflow run "
        f"{candidate.tags.get('evergreen.airflow_run_id')}")
    aliases = tracking.aliases(client, model.name)
    say(f"      aliases: {', '.join(f'{a} -> {v}' for a, v in sorted(aliases.items())) or 'none'} -- the candidate "
        "waits for the promotion gate (promote_<model>, not run by this demo yet)")
