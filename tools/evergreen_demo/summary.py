"""The month's report: what the platform recorded, gathered into the data of ``report/index.html`` and a summary.

Every figure is read back from the store (drift, performance, A/B and retrain records, the ledger, the logged
predictions), the registry, or the demo's own log of what it did; :mod:`evergreen_demo.html` draws it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import tracking
from evergreen.paths import home
from evergreen_demo.runner import output_to, say

if TYPE_CHECKING:
    from evergreen_demo.month import DayLog, Month

MLFLOW_UI = "http://127.0.0.1:5000"


def _day_range(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=1)


def traffic(month: Month) -> list[dict]:
    """Logged predictions per day, arm and version (from the store: what the prediction log shipped)."""
    out = []
    s = month.scenario
    frame = month.store.read_predictions(month.model.name, *(_day_range(s.first_day)[0], _day_range(s.last_day)[1]))
    if frame.empty:
        return out
    frame = frame[~frame["request_id"].astype(str).str.contains("history")]
    frame["day"] = frame["ts"].dt.strftime("%Y-%m-%d")
    for (day, arm, version), n in frame.groupby(["day", "arm", "model_version"]).size().items():
        out.append({"day": day, "arm": arm, "version": str(version), "requests": int(n)})
    return out


def live_metric(month: Month) -> tuple[list[dict], list[dict]]:
    """The live metric of each version's predictions per day, with its interval, and each version's baseline."""
    live, baselines = [], {}
    for rec in month.store.list_records("performance", month.model.name):
        p = rec.payload
        day = (p.get("window") or {}).get("start")
        for g in p.get("groups") or []:
            if g.get("by") != "version":
                continue
            est = g.get("estimate") or {}
            if est.get("value") is None:
                continue
            live.append({"day": day, "version": str(g["value"]), "value": est["value"], "low": est.get("ci_low"),
                         "high": est.get("ci_high"), "n": g.get("n_usable") or g.get("n_labelled")})
            base = g.get("baseline") or {}
            if base.get("value") is not None:
                baselines[str(g["value"])] = base["value"]
    return live, [{"version": v, "value": b} for v, b in sorted(baselines.items(), key=lambda kv: int(kv[0]))]


def drift_rows(month: Month, report_dir: Path) -> list[dict]:
    out = []
    for rec in month.store.list_records("drift", month.model.name):
        p = rec.payload
        if p.get("status") != "ok":
            continue
        out.append({"day": (p.get("window") or {}).get("start"), "share": p.get("drifted_share"),
                    "threshold": month.model.drift.drift_share, "drifted": bool(p.get("dataset_drift")),
                    "report": _drift_report_link(month, p, report_dir)})
    return out


def _drift_report_link(month: Month, payload: dict, report_dir: Path) -> str | None:
    """The Evidently report of a drift record: its MLflow artifact, as a path relative to the report."""
    run_id = (payload.get("mlflow") or {}).get("run_id")
    if not run_id:
        return None
    try:
        uri = month.registry.get_run(run_id).info.artifact_uri
    except Exception:  # noqa: BLE001 - a link is optional
        return None
    path = Path(uri.removeprefix("file://")) / "drift_report.html"
    return os.path.relpath(path, report_dir) if path.exists() else None


def versions(month: Month) -> list[dict]:
    name = month.model.name
    aliases = {v: k for k, v in tracking.aliases(month.registry, name).items()}
    out = []
    for v in tracking.versions(month.registry, name):
        tags = v.tags or {}
        out.append({"version": str(v.version), "status": aliases.get(str(v.version)) or tags.get(
                        f"{tracking.TAG}status", ""),
                    "url": f"{MLFLOW_UI}/#/models/{name}/versions/{v.version}",
                    "window": tags.get(tracking.TRAINING_WINDOW_TAG, "")})
    return out


def first_day(events: list[dict], kind: str, after: dt.date | None = None) -> str | None:
    days = sorted(e["day"] for e in events if e["kind"] == kind and (after is None or e["day"] >= after.isoformat()))
    return days[0] if days else None


def build_report(month: Month, days: list[DayLog], backfill: dict, *, started_at: float) -> Path:
    from evergreen_demo.html import write_report

    s = month.scenario
    report_dir = home().root / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    events = [dict(e) for d in days for e in d.events]
    _mark_milestones(events)
    live, baselines = live_metric(month)
    served = sum(sum(d.served.values()) for d in days)
    logged = sum(d.logged or 0 for d in days)
    shift, concept = s.date(s.shift_day), s.date(s.concept_day)
    n = s.number
    summary = [
        ["Simulated days", f"{s.days} ({s.first_day} .. {s.last_day}), {s.rows_per_day:,} requests a day"],
        ["First champion", _day_of(first_day(events, "bootstrap"), n)],
        ["Distribution shift", f"day {s.shift_day} ({shift}); drift detected "
                               f"{_day_of(first_day(events, 'drift', shift), n)}"],
        ["Concept shift", f"day {s.concept_day} ({concept}); decay confirmed "
                          f"{_day_of(first_day(events, 'decay', concept), n)}" if s.concept_day <= s.days
         else "none in this month"],
        ["Promotions", ", ".join(_day_of(e["day"], n) for e in events if e["kind"] == "promotion") or "none"],
        ["A/B tests", f"{sum(e['kind'] == 'ab_start' for e in events)} started, "
                      f"{sum(e['kind'] == 'ab_decision' for e in events)} decided"],
        ["Requests answered / predictions logged", f"{served:,} / {logged:,}"],
        ["Backfill", f"{backfill.get('command', 'none')}: drift verdicts the same: {backfill.get('same_verdicts')}, "
                     f"aliases unchanged: {backfill.get('aliases_unchanged')}, retrain runs "
                     f"{backfill.get('retrain_runs')} (trained {backfill.get('trained')})"],
        ["Wall time of this run (a re-run reuses the month)", f"{(time.monotonic() - started_at) / 60:.1f} min"],
    ]
    peers, peer_data = compare_peers(month, events, live, baselines, data_traffic := traffic(month))
    summary.insert(5, ["Recovered (the champion's live metric back within tolerance of its own baseline)",
                       peer_data["recovered_text"]])
    data = {
        "model": month.model.name, "metric": month.model.metric,
        "days": [s.date(i).isoformat() for i in range(1, s.days + 1)],
        "phases": [p for p in ({"start": shift.isoformat(), "end": s.last_day.isoformat(),
                                "name": "distribution shift"},
                               {"start": concept.isoformat(), "end": s.last_day.isoformat(), "name": "concept shift"})
                   if p["start"] <= s.last_day.isoformat()],
        "live": live, "baselines": baselines, "drift": drift_rows(month, report_dir), "traffic": data_traffic,
        "events": events, "timeline": [{"day": d.day.isoformat(), "lines": d.lines} for d in days],
        "runs": [r for d in days for r in d.runs], "versions": versions(month), "summary": summary, "peers": peers, "peer_data": peer_data,
        "notes": [
            "Open the same history in the UIs: `make demo-ui` starts the Airflow UI on http://localhost:8080 (user "
            "admin, password in .evergreen/airflow/simple_auth_manager_passwords.json.generated; no scheduler runs, "
            f"so nothing new happens) and the MLflow UI on {MLFLOW_UI}. The links below point there.",
        ],
    }
    (report_dir / "data.json").write_text(json.dumps(data, indent=1, default=str))
    index = write_report(data, report_dir)
    say("")
    say("Summary")
    for k, v in summary:
        say(f"  {k}: {v}")
    return index


#: events the figure marks (the table lists every event): the loop's milestones
MILESTONES = {"bootstrap", "approval", "drift", "decay", "retrain", "ab_start", "ab_decision", "promotion", "rollback"}


def _mark_milestones(events: list[dict]) -> None:
    """``plot: False`` on events the figure leaves out: non-milestones, and a drift or decay repeating the day
    before's (the first day of a streak is the news)."""
    seen: dict[str, str] = {}
    for e in events:
        kind, day = e["kind"], e["day"]
        repeat = kind in ("drift", "decay") and seen.get(kind) == (
            dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        if kind in ("drift", "decay"):
            seen[kind] = day
        e["plot"] = kind in MILESTONES and not repeat


def champion_by_day(rows: list[dict]) -> dict[str, str]:
    """The champion's version per day, from the logged traffic."""
    out: dict[str, tuple[int, str]] = {}
    for r in rows:
        if r["arm"] == "champion" and r["requests"] > out.get(r["day"], (0, ""))[0]:
            out[r["day"]] = (r["requests"], r["version"])
    return {d: v for d, (_, v) in out.items()}


def recovered_day(month: Month, live: list[dict], baselines: list[dict], rows: list[dict], phase: int,
                  end: int) -> int | None:
    """The first day from ``phase`` (before ``end``), after the served champion's live metric fell below its own
    offline baseline minus the performance tolerance, from which the champion then serving is back within that
    tolerance of its baseline while it serves: two days running, unless it stops serving (a rollback) or the month
    ends first."""
    s = month.scenario
    champion = champion_by_day(rows)
    value = {(d["day"], d["version"]): d["value"] for d in live}
    base = {b["version"]: b["value"] for b in baselines}
    tolerance = month.model.performance.tolerance

    def ok(n: int) -> bool | None:
        day = s.date(n).isoformat()
        v = champion.get(day)
        if (day, v) not in value or v not in base:
            return None
        return value[(day, v)] >= base[v] - tolerance

    days = [n for n in range(phase, end) if ok(n) is not None]
    dropped = False
    for i, n in enumerate(days):
        if not ok(n):
            dropped = True
        elif dropped and (i + 1 == len(days) or ok(days[i + 1])
                          or champion.get(s.date(days[i + 1]).isoformat()) != champion.get(s.date(n).isoformat())):
            return n
    return None


def compare_peers(month: Month, events: list[dict], live: list[dict], baselines: list[dict],
                  rows: list[dict]) -> tuple[list, dict]:
    """Evergreen's days against the hand-wired rules' on the same month (:mod:`evergreen_demo.peers`)."""
    from evergreen_demo import peers

    s = month.scenario
    n = s.number
    ends = [s.concept_day if s.concept_day > s.shift_day else s.days + 1, s.days + 1]
    phases = [("distribution shift", s.shift_day, ends[0]), ("concept shift", s.concept_day, ends[1])]
    phases = [p for p in phases if p[1] <= s.days]
    recovered = {name: recovered_day(month, live, baselines, rows, start, end) for name, start, end in phases}
    probe = sorted({d for _, start, _ in phases for d in (start - 1, start, start + 1) if 1 <= d <= s.days
                    and d > s.history_days})
    with output_to(home().root / "demo-logs" / "peers.log"):  # MLflow's download bars, skops' and Evidently's warnings
        weekly = peers.weekly_accuracy_rule(month)
        evidently = peers.evidently_default(month, probe)
    first = first_day(events, "bootstrap")
    rows_out = [["", "first model", *[f"{name} (day {start})" for name, start, _ in phases]]]
    ours = ["Evergreen (this month)", _day_of(first, n)]
    for name, start, end in phases:
        kind = "drift" if name.startswith("distribution") else "decay"
        detected = first_day(events, kind, s.date(start))
        promoted = [e["day"] for e in events if e["kind"] == "promotion" and e["day"] >= s.date(start).isoformat()
                    and e["day"] < s.date(end).isoformat()]
        ours.append(f"{kind} day {n(dt.date.fromisoformat(detected)) if detected else '-'}, new champion "
                    f"{'day ' + str(n(dt.date.fromisoformat(promoted[0]))) if promoted else 'none'}, recovered "
                    f"{'day ' + str(recovered[name]) if recovered[name] else 'not in the month'}")
    rows_out.append(ours)
    fired = weekly.get("fired")
    row = [f"weekly check: {weekly['rule']} (v{weekly.get('version')}, baseline {weekly.get('baseline')})",
           "day 7 at the earliest (its first weekly run)"]
    for name, start, end in phases:
        hits = [c["day"] for c in weekly.get("checks", []) if start <= c["day"] < end and c["accuracy"] < (
            weekly["baseline"] - peers.ACCURACY_DROP)]
        row.append(f"fires day {hits[0]}: a retrained model serves from day {hits[0] + 1} at the earliest"
                   if hits else "never fires in the month")
    rows_out.append(row)
    row = ["Evidently's default drift verdict (DataDriftPreset(), reference: the first champion's training rows)",
           "n/a (reports only)"]
    for name, start, end in phases:
        seen = {d: v for d, v in evidently["verdicts"].items() if start - 1 <= d <= start + 1}
        shares = ", ".join(f"day {d} {v['share']:.2f}" for d, v in sorted(seen.items()))
        before, after = seen.get(start - 1), seen.get(start + 1)
        if before is not None and after is not None and before["drift"] == after["drift"] and (
                abs(before["share"] - after["share"]) < 0.15):
            verdict = (f"no change at day {start} (drifted share: {shares}): the shift moves no feature, so a drift "
                       "report cannot see it")
        else:
            flags = [d for d, v in sorted(seen.items()) if v["drift"]]
            verdict = (f"dataset drift from day {flags[0]}" if flags else "no dataset drift") + \
                f" (drifted share: {shares})"
        row.append(verdict + "; retrains nothing on its own")
    rows_out.append(row)
    text = "; ".join(f"{name}: {'day ' + str(r) if r else 'not in the month'}" for name, r in recovered.items())
    return rows_out, {"weekly": weekly, "evidently": evidently, "recovered": recovered, "recovered_text": text}


def _day_of(day: str | None, number: Any) -> str:
    if not day:
        return "never"
    return f"day {number(dt.date.fromisoformat(day))} ({day})"
