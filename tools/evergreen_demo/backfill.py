"""After the month: ops backfill a stretch of days with ``airflow backfill create``, and the demo checks what moved.

A backfill recomputes facts and never acts on them: the drift records of those days are rewritten with the same
verdicts (the same data, judged against the champion the ledger says served each day), its signal tasks skip (a
backfill never signals, so no ``retrain_<model>`` run starts; one that did would answer ``backfill``), and no alias
moves, no test starts or stops, no ledger entry appears. Airflow turns the days' existing runs into the backfill's
(``--reprocess-behavior completed``): their run type becomes ``backfill``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from evergreen import tracking
from evergreen_demo.runner import DemoError, say
from evergreen_demo.stack import wait_for

if TYPE_CHECKING:
    from evergreen_demo.month import Month

VERDICT_KEYS = ("status", "dataset_drift", "drifted_share", "drifted_features", "n_judged")


def _verdicts(month: Month, days: list[dt.date]) -> dict[str, Any]:
    out = {}
    for day in days:
        rec = month.store.get_record("drift", f"{month.model.name}/{day}")
        out[day.isoformat()] = None if rec is None else {k: rec.payload.get(k) for k in VERDICT_KEYS}
    return out


def _decisions(month: Month) -> dict[str, Any]:
    return {r.key: r.payload for r in month.store.list_records("retrain_decision", month.model.name)}


def run_backfill(month: Month) -> dict[str, Any]:
    from evergreen.promote import ledger

    s, name = month.scenario, month.model.name
    first, last = s.backfill
    days = [s.date(n) for n in range(first, last + 1)]
    dag_id = f"monitor_drift_{name}"
    key = f"{days[0]}/{days[-1]}"
    if month.state.get("backfill") == key:
        say(f"[backfill] reused: {dag_id} over {key} ran before in this home")
        return month.state.get("backfill_result") or {}
    before = {"aliases": tracking.aliases(month.registry, name), "ledger": len(ledger.entries(month.store, name)),
              "verdicts": _verdicts(month, days), "decisions": set(_decisions(month))}
    start, _ = month.interval("monitor_drift", days[0])
    end, _ = month.interval("monitor_drift", days[-1])
    argv = ["backfill", "create", "--dag-id", dag_id, "--from-date", start, "--to-date", end,
            "--reprocess-behavior", "completed", "--max-active-runs", "2"]
    say(f"[backfill] ops: airflow {' '.join(argv)}")
    t0 = time.monotonic()
    month.phase_started = time.time()
    month.airflow.cli(*argv, log="airflow-backfill-create")

    def backfill_runs() -> list[dict] | None:
        runs = [r for r in month.airflow.runs(dag_id) if r["run_type"] == "backfill"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if len(runs) >= len(days) and len(done) == len(runs) else None

    runs = wait_for(f"the backfill's {len(days)} runs of {dag_id}", backfill_runs, 900,
                    str(month.airflow.logs / "airflow-scheduler.log"), every=2)
    failed = [r for r in runs if r["state"] != "success"]
    if failed:
        raise DemoError(f"backfill run {failed[0]['dag_run_id']} of {dag_id} {failed[0]['state']}")
    from evergreen_demo.month import DayLog

    entry = DayLog(s.last_day, s.days)
    month.settle(entry)  # the retrain runs the backfill's Asset events started
    after = {"aliases": tracking.aliases(month.registry, name), "ledger": len(ledger.entries(month.store, name)),
             "verdicts": _verdicts(month, days)}
    new = {k: v for k, v in _decisions(month).items() if k not in before["decisions"]}
    month.retrain_seen.update(new)
    trained = [k for k, v in new.items() if v.get("retrain")]
    result = {
        "command": "airflow " + " ".join(argv),
        "days": [d.isoformat() for d in days],
        "runs": [{"dag_id": dag_id, "run_id": r["dag_run_id"], "state": r["state"], "day": r["logical_date"][:10]}
                 for r in runs],
        "same_verdicts": before["verdicts"] == after["verdicts"],
        "aliases_unchanged": before["aliases"] == after["aliases"],
        "ledger_unchanged": before["ledger"] == after["ledger"],
        "retrain_runs": len(new),
        "retrain_reasons": sorted({str(v.get("reason", "")) for v in new.values()}),
        "trained": len(trained),
        "seconds": round(time.monotonic() - t0, 1),
    }
    ok = result["same_verdicts"] and result["aliases_unchanged"] and result["ledger_unchanged"] and not trained
    say(f"[backfill] {len(runs)} backfill runs of {dag_id} in {result['seconds']:.0f}s: drift verdicts "
        f"{'recomputed, the same' if result['same_verdicts'] else 'CHANGED'}; aliases "
        f"{'unchanged' if result['aliases_unchanged'] else 'MOVED'}; ledger "
        f"{'unchanged' if result['ledger_unchanged'] else 'CHANGED'}; "
        + (f"{len(new)} retrain run(s) started by its events, {len(trained)} trained (reasons: "
           f"{', '.join(result['retrain_reasons'])})" if new else "no drift signal sent (a backfill never signals), "
           "so no retrain run"))
    if not ok:
        raise DemoError(f"the backfill moved something it must not: {result}")
    month.state["backfill"] = key
    month.state["backfill_result"] = result
    month.save_state()
    return result
