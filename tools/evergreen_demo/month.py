"""A month of production of one model, through a real Airflow, the real scoring app and the real registry.

The demo plays the parts that are not the platform: the customers (requests to the scoring app), the source system
(outcome files in the landing zone, one day after the requests), the calendar (a simulated clock file every
platform process reads, :mod:`evergreen.clock`), and the ops team (the first retrain of a new model, an approval in
the promotion gate, a rollback, a backfill). Everything else is the platform reacting on its own: each day's daily
DAGs run for that day's interval (triggered through the REST API, as an ops replay of a past month would be); a
drift or decay signal is an Asset event the **scheduler** turns into a ``retrain_<model>`` run; a registered
candidate is an Asset event the scheduler turns into a ``promote_<model>`` run; an A/B test starts, is analysed and
ends in ``ab_analysis_<model>``; the scoring app follows the registry's aliases.

A day ``D`` (see :class:`evergreen_demo.world.Scenario`): traffic of ``D`` through the scoring app (clock on ``D``),
every answer checked to be in the store; the outcome file of those requests written to the landing day ``D + 1``;
then, with the clock at ``D + 1 00:10``, ``ingest_feedback`` and ``monitor_drift`` for ``D``, then
``evaluate_performance`` and ``ab_analysis`` for ``D`` (their labels come from that ingestion), then whatever the
scheduler starts from the events, until Airflow is idle and the scoring app serves what the registry says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evergreen import clock, lake, tracking
from evergreen_demo.runner import DemoError, say
from evergreen_demo.stack import ACTIVE, Airflow, Serving, wait_for
from evergreen_demo.world import Requests, Scenario, requests

if TYPE_CHECKING:
    from evergreen.config import ModelConfig
    from evergreen.store.base import Store

BATCHES_PER_DAY = 10
#: the daily DAGs' tasks that emit an Asset event (drift, decay) when they run; skipped, they signalled nothing
SIGNALLING = {"monitor_drift": "signal_drift", "evaluate_performance": "signal_decay"}
PHASE_TIME = dt.time(0, 10)  # the clock while a day's DAGs run: just after midnight of the next day
APPROVER_WAIT_S = 8  # a person reads the request before answering (and Airflow 3.3.2 loses an answer within ~1 s)


def run_id(kind: str, day: dt.date) -> str:
    return f"demo__{kind}__{day.isoformat()}"


@dataclass
class DayLog:
    """What happened on one simulated day (the timeline's line and the report's rows)."""

    day: dt.date
    number: int
    lines: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    served: dict[str, int] = field(default_factory=dict)  # "<arm> v<version>" -> rows
    logged: int | None = None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "day": self.day.isoformat()}

    @classmethod
    def from_dict(cls, doc: dict) -> DayLog:
        return cls(**{**doc, "day": dt.date.fromisoformat(doc["day"])})

    def event(self, kind: str, text: str, link: str | None = None) -> None:
        self.events.append({"day": self.day.isoformat(), "kind": kind, "text": text, "link": link})
        self.lines.append(f"{kind}: {text}")


class Month:
    def __init__(self, model: ModelConfig, store: Store, airflow: Airflow, serving: Serving, scenario: Scenario,
                 clock_file: Path, registry: Any, state_file: Path) -> None:
        self.model, self.store, self.airflow, self.serving = model, store, airflow, serving
        self.scenario, self.clock_file, self.registry, self.state_file = scenario, clock_file, registry, state_file
        self.log: list[DayLog] = []
        self.phase_started = time.time()
        self.ledger_seen = 0
        self.retrain_seen: set[str] = set()
        self.state = json.loads(state_file.read_text()) if state_file.exists() else {"days": {}}

    def save_state(self) -> None:
        """The demo's progress, replaced atomically (an interrupt never leaves half a file)."""
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_file)

    # --- the calendar ---------------------------------------------------------------------------------------

    def set_clock(self, moment: dt.datetime) -> None:
        clock.set_simulated(self.clock_file, moment)

    def at(self, day: dt.date, t: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, t, tzinfo=dt.timezone.utc)

    # --- one day ----------------------------------------------------------------------------------------------

    def play(self) -> list[DayLog]:
        s = self.scenario
        started = time.monotonic()
        for n in range(1, s.days + 1):
            day = s.date(n)
            saved = self.state.setdefault("days", {}).get(day.isoformat())
            t0 = time.monotonic()
            if saved is not None:
                entry = DayLog.from_dict(saved)
                self.log.append(entry)
                self._catch_up(entry)
                say(f"[day {n:2d}/{s.days}] {day}  reused (ran before in this home): {self._summary(entry)}")
                continue
            entry = DayLog(day, n)
            self.log.append(entry)
            self.day(entry)
            # the day is done once everything it started has settled: a re-run reuses it (and what it showed)
            self.state["days"][day.isoformat()] = entry.to_dict()
            self.save_state()
            elapsed = time.monotonic() - started
            say(f"[day {n:2d}/{s.days}] {day}  {self._summary(entry)}  ({time.monotonic() - t0:.0f}s; "
                f"{elapsed / 60:.1f} min so far)")
            for line in entry.lines:
                say(f"           {line}")
        return self.log

    def _summary(self, entry: DayLog) -> str:
        served = ", ".join(f"{arm} {rows}" for arm, rows in sorted(entry.served.items())) or "no traffic"
        kinds = sorted({e["kind"] for e in entry.events})
        return f"served: {served}" + (f" | {', '.join(kinds)}" if kinds else "")

    def day(self, entry: DayLog) -> None:
        s, n, day = self.scenario, entry.number, entry.day
        if n <= s.history_days:
            self.land_history(entry)
        if self.serving_ready():
            reqs = requests(self.model, s, n)
            self.serve(entry, reqs)
            self.land_outcomes(entry, reqs)
        else:
            entry.lines.append("no champion yet: the scoring app has nothing to serve (the model in production "
                               "before Evergreen answers; its outcomes arrive as the history export)")
        if n == s.bad_input_day:
            self.land_bad_file(entry)
        self.run_daily(entry)
        if n == s.history_days:
            self.bootstrap(entry)
        if n == s.rollback_day:
            self.rollback(entry)
        self.follow_registry(entry)

    def _catch_up(self, entry: DayLog) -> None:
        """A reused day: what it showed is the saved log; only the counters of what was already reported move on
        (the ledger entries and retrain decisions of that day are not reported again by the next day)."""
        from evergreen.promote import ledger

        end = self.at(entry.day + dt.timedelta(days=2), dt.time())  # its phase ran on the next day
        self.ledger_seen = len(ledger.entries(self.store, self.model.name, end=end))
        self.retrain_seen |= {r.key for r in self.store.list_records("retrain_decision", self.model.name, end=end)}

    # --- the customers --------------------------------------------------------------------------------------

    def serving_ready(self) -> bool:
        return bool(self.serving.arms())

    def serve(self, entry: DayLog, reqs: Requests) -> None:
        n = len(reqs.request_ids)
        size = -(-n // BATCHES_PER_DAY)
        answered: list[dict] = []
        times: dict[str, dt.datetime] = {}
        for b in range(BATCHES_PER_DAY):
            rows = slice(b * size, min(n, (b + 1) * size))
            if rows.start >= rows.stop:
                break
            moment = self.at(entry.day, dt.time(1)) + dt.timedelta(hours=b * 22 / BATCHES_PER_DAY)
            self.set_clock(moment)
            for answer in self.serving.predict(reqs.records(self.model, rows)):
                answered.append(answer)
                times[answer["request_id"]] = moment
        for a in answered:
            key = f"{a['arm']} v{a['model_version']}"
            entry.served[key] = entry.served.get(key, 0) + 1
        # Every answer is in the store (the prediction log ships within a second): count the day's rows by arm.
        start, end = self.at(entry.day, dt.time()), self.at(entry.day + dt.timedelta(days=1), dt.time())
        expected = len(answered)
        if any(a["arm"] == "challenger" for a in answered) and self.model.ab_test.mode == "shadow":
            expected *= 2

        def logged() -> int | None:
            frame = self.store.read_predictions(self.model.name, start, end)
            return len(frame) if len(frame) >= expected else None

        got = wait_for(f"the {expected} predictions of {entry.day} in the store", logged, 60,
                       str(self.serving.logs / "serving.log"), every=0.5)
        entry.logged = got
        self._times = times
        entry.lines.append(f"{len(answered):,} requests answered by the scoring app, {got:,} predictions in the "
                           f"store: " + ", ".join(f"{k} {v:,}" for k, v in sorted(entry.served.items())))

    # --- the source system ----------------------------------------------------------------------------------

    def _write_landing(self, day: dt.date, name: str, frame: Any) -> str:
        folder = Path(lake.landing_dir(self.model.name, day))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        frame.to_csv(tmp, index=False)
        tmp.replace(folder / name)
        return f"dt={day}/{name}"

    def land_outcomes(self, entry: DayLog, reqs: Requests) -> None:
        import pandas as pd

        m = self.model
        ts = [self._times[r] + dt.timedelta(days=1) for r in reqs.request_ids]
        frame = pd.DataFrame({m.request_id: reqs.request_ids,
                              m.timestamp: [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts],
                              m.label.name: reqs.labels})
        where = self._write_landing(entry.day + dt.timedelta(days=1), f"outcomes-{entry.day}.csv", frame)
        entry.lines.append(f"outcomes of those requests written to the landing zone ({where}; churn share "
                           f"{reqs.labels.mean():.2f}), ingested tomorrow")

    def land_history(self, entry: DayLog) -> None:
        import pandas as pd

        m = self.model
        reqs = requests(m, self.scenario, entry.number, n=self.scenario.history_rows, prefix="history")
        ts = [self.at(entry.day, dt.time()) + dt.timedelta(seconds=int(i * 86_000 / len(reqs.request_ids)))
              for i in range(len(reqs.request_ids))]
        frame = pd.DataFrame({m.request_id: reqs.request_ids,
                              m.timestamp: [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in ts],
                              m.label.name: reqs.labels, m.entity_id: reqs.entity_ids})
        frame = pd.concat([frame, reqs.features], axis=1)
        where = self._write_landing(entry.day, "history-export.csv", frame)
        entry.lines.append(f"the source system's history export landed ({where}: {len(frame):,} outcomes with "
                           "their features)")

    def land_bad_file(self, entry: DayLog) -> None:
        """A hand-made corrections file with one mistake of each kind: its valid row lands, the rest are
        quarantined with the reason, and the ingestion record counts them."""
        import pandas as pd

        m = self.model
        prev = requests(m, self.scenario, entry.number - 1)
        first = self.at(entry.day, dt.time(9)).strftime("%Y-%m-%dT%H:%M:%SZ")
        late = self.at(entry.day, dt.time(23, 59)).strftime("%Y-%m-%dT%H:%M:%SZ")  # after the original: it wins
        frame = pd.DataFrame([
            {m.request_id: f"{m.name}-never-logged", m.timestamp: first, m.label.name: "1"},
            {m.request_id: prev.request_ids[1], m.timestamp: first, m.label.name: "2"},
            {m.request_id: prev.request_ids[2], m.timestamp: first, m.label.name: ""},
            {m.request_id: prev.request_ids[3], m.timestamp: "yesterday", m.label.name: "0"},
            {m.request_id: "", m.timestamp: first, m.label.name: "1"},
            {m.request_id: prev.request_ids[8], m.timestamp: late, m.label.name: str(1 - int(prev.labels[8]))},
        ])
        where = self._write_landing(entry.day, "zz-resent-corrections.csv", frame)
        entry.lines.append(f"a hand-made corrections file landed with five bad rows and one correction ({where})")

    # --- the daily DAGs -------------------------------------------------------------------------------------

    def interval(self, dag_kind: str, day: dt.date) -> tuple[str, str]:
        """The data interval a scheduled run for ``day`` would have: from the cron's tick on ``day`` to the next."""
        from croniter import croniter

        cron = getattr(self.model.schedules, dag_kind, None) or self.model.ab_test.schedule
        first = croniter(cron, self.at(day, dt.time()) - dt.timedelta(microseconds=1)).get_next(dt.datetime)
        second = croniter(cron, first).get_next(dt.datetime)
        return first.isoformat(), second.isoformat()

    def run_daily(self, entry: DayLog) -> None:
        """The day's runs in their cron order (ingest 01:00, drift 02:00, performance 03:00, A/B 05:00), as far as
        one reads what another changed: performance and the A/B test read the labels ingestion lands, and a drift
        retrain trains on them, so ingestion goes first; drift and performance then run side by side (the retrain
        DAG runs one at a time, so a drift and a decay signal of one day still give one training, whichever comes
        first); while an A/B test runs, ab_analysis waits until the retrains those signals started are settled (a
        retrain decides differently while a test runs). Without a challenger it only short-circuits, so it runs
        beside them.
        """
        day, name = entry.day, self.model.name
        phase = self.phase_started = time.time()
        self.set_clock(self.at(day + dt.timedelta(days=1), PHASE_TIME))
        testing = tracking.CHALLENGER in tracking.aliases(self.registry, name)
        groups = [["ingest_feedback"], ["monitor_drift", "evaluate_performance"] + ([] if testing else ["ab_analysis"])]
        if testing:
            groups.append(["ab_analysis"])
        for group in groups:
            started = [self._trigger(kind, f"{kind}_{name}", day) for kind in group]
            self._wait_runs(started)
            # a signal task that ran (not skipped) emitted an Asset event: the scheduler reacts to it
            if any(kind in SIGNALLING and self.airflow.task_states(dag_id, rid).get(SIGNALLING[kind]) == "success"
                   for (dag_id, rid), kind in zip(started, group)):
                self.settle(entry)
        self.collect(entry, since=phase)

    def _trigger(self, kind: str, dag_id: str, day: dt.date) -> tuple[str, str]:
        rid, _ = self.airflow.trigger(dag_id, run_id(kind, day), interval=self.interval(kind, day))
        return dag_id, rid

    def _wait_runs(self, runs: list[tuple[str, str]], timeout: float = 600) -> None:
        for dag_id, rid in runs:
            state = wait_for(f"{dag_id} run {rid}", lambda d=dag_id, r=rid: self._finished(d, r), timeout,
                             str(self.airflow.logs / "airflow-scheduler.log"), every=0.25)
            if state != "success":
                raise DemoError(f"{dag_id} run {rid} {state}: {self.airflow.task_states(dag_id, rid)}; its task "
                                f"logs are under {Path(self.airflow.env['AIRFLOW_HOME']) / 'logs'}")

    def _finished(self, dag_id: str, rid: str) -> str | None:
        state = self.airflow.run(dag_id, rid)["state"]
        return None if state in ACTIVE else state

    def settle(self, entry: DayLog, timeout: float = 900) -> None:
        """Until Airflow is idle: no queued or running run of the model's DAGs and no Asset event waiting to start
        one; a promotion waiting for approval is answered as the ops team would."""
        name = self.model.name
        reactive = [f"retrain_{name}", f"promote_{name}"]
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        answered: set[str] = set()
        waiting_since: dict[str, float] = {}
        while time.monotonic() < deadline:
            for proc in self.airflow.procs:
                proc.check()
            active = [r for state in ACTIVE for r in self.airflow.runs(state=state)]
            active = [r for r in active if r["dag_id"].endswith(f"_{name}")]
            queued = sum(self.airflow.queued_events(d) for d in reactive)
            for r in active:
                if r["dag_id"] == f"promote_{name}" and r["dag_run_id"] not in answered:
                    states = self.airflow.task_states(r["dag_id"], r["dag_run_id"])
                    if states.get("approve") == "awaiting_input":
                        first = waiting_since.setdefault(r["dag_run_id"], time.monotonic())
                        if time.monotonic() - first >= APPROVER_WAIT_S:
                            self.approve(entry, r["dag_run_id"])
                            answered.add(r["dag_run_id"])
            if not active and not queued:
                self._no_failed_runs()
                quiet_since = quiet_since or time.monotonic()
                # an Asset event is queued (visible above) in the same transaction that finishes its task, so an
                # idle Airflow with nothing queued stays idle: one more look a scheduler loop later is enough
                if time.monotonic() - quiet_since >= 1.5:
                    return
            else:
                quiet_since = None
            time.sleep(0.5)
        raise DemoError(f"Airflow was still busy after {timeout:.0f}s; see {self.airflow.logs}")

    def _no_failed_runs(self) -> None:
        """Every run of the model's DAGs created since the phase began succeeded (a failed retrain, promote or
        rollback run would otherwise leave the timeline silently short)."""
        for r in self.airflow.runs(state="failed"):
            created = dt.datetime.fromisoformat(r["run_after"].replace("Z", "+00:00")).timestamp()
            if r["dag_id"].endswith(f"_{self.model.name}") and created >= self.phase_started - 1:
                states = self.airflow.task_states(r["dag_id"], r["dag_run_id"])
                raise DemoError(f"{r['dag_id']} run {r['dag_run_id']} failed ({states}); its task logs are under "
                                f"{Path(self.airflow.env['AIRFLOW_HOME']) / 'logs'}")

    def approve(self, entry: DayLog, rid: str) -> None:
        dag_id = f"promote_{self.model.name}"
        detail = self.airflow.hitl(dag_id, rid, "approve") or {}
        self.airflow.answer(dag_id, rid, "approve", "Approve")
        entry.event("approval", f"ops approved '{detail.get('subject', 'the promotion')}' in the promotion gate "
                                "(HITL request answered Approve through the REST API as admin)",
                    self._run_url(dag_id, rid))

    # --- ops ------------------------------------------------------------------------------------------------

    def bootstrap(self, entry: DayLog) -> None:
        """Ops bootstraps the new model: retrain_<model> triggered by hand on the landed history."""
        s, name = self.scenario, self.model.name
        phase = self.phase_started = time.time()
        start, end = s.first_day, s.date(s.history_days + 1)
        conf = {"force": False, "dry_run": False, "window_start": start.isoformat(), "window_end": end.isoformat(),
                "window_days": self.model.retrain.training_window_days, "hyperparameters": {}}
        rid, _ = self.airflow.trigger(f"retrain_{name}", run_id("bootstrap", entry.day), conf=conf)
        entry.lines.append(f"ops trigger retrain_{name} by hand (run {rid}) on the history, window {start}/{end}")
        self.settle(entry)
        self.collect(entry, since=phase)

    def rollback(self, entry: DayLog) -> None:
        name = self.model.name
        phase = self.phase_started = time.time()
        before = tracking.aliases(self.registry, name).get(tracking.CHAMPION)
        rid, _ = self.airflow.trigger(f"rollback_{name}", run_id("rollback", entry.day), conf={"version": None})
        entry.lines.append(f"ops roll back champion v{before} (rollback_{name} run {rid}, the previous champion "
                           "from the ledger)")
        self.settle(entry)
        self.collect(entry, since=phase)

    def follow_registry(self, entry: DayLog) -> None:
        """Wait until the scoring app serves what the registry's aliases say (it polls them)."""
        want = {k: v for k, v in tracking.aliases(self.registry, self.model.name).items()
                if k in (tracking.CHAMPION, tracking.CHALLENGER)}
        if not want:
            return
        wait_for(f"the scoring app to serve {want}", lambda: self.serving.arms() == want, 120,
                 str(self.serving.logs / "serving.log"))

    # --- what the platform recorded -------------------------------------------------------------------------

    def collect(self, entry: DayLog, since: float | None) -> None:
        """The records and ledger entries of this phase, as timeline lines and events; the phase's runs."""
        from evergreen.promote import ledger

        name, day = self.model.name, entry.day
        drift = self.store.get_record("drift", f"{name}/{day}")
        if drift is not None and not any(line.startswith("drift ") for line in entry.lines):
            p = drift.payload
            share = p.get("drifted_share")
            if p.get("status") == "ok" and share is not None:
                verdict = "dataset drift" if p.get("dataset_drift") else "no dataset drift"
                text = (f"drift share {share:.2f} ({len(p.get('drifted_features') or [])} of {p.get('n_judged')} "
                        f"features drifted): {verdict}")
            else:
                text = f"drift cannot be judged: {str(p.get('reason', ''))[:160]}"
            if p.get("dataset_drift"):
                entry.event("drift", text, (p.get("mlflow") or {}).get("url"))
            else:
                entry.lines.append(text)
        perf_day = day - dt.timedelta(days=self.model.performance.label_delay_days)
        perf = self.store.get_record("performance", f"{name}/{perf_day}")
        if perf is not None and not any(line.startswith("live ") for line in entry.lines):
            p = perf.payload
            champ = p.get("champion") or {}
            est = champ.get("estimate") or {}
            if est.get("value") is not None:
                text = (f"live {p['metric']} of v{p.get('champion_version')} on {perf_day}'s predictions "
                        f"{est['value']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}] vs baseline "
                        f"{(champ.get('baseline') or {}).get('value', float('nan')):.3f}: {p['status']}")
            else:
                text = f"live metric for {perf_day}: {p['status']} -- {str(p.get('reason', ''))[:160]}"
            if p.get("decay"):
                entry.event("decay", text)
            else:
                entry.lines.append(text)
        ingest = self.store.get_record("ingestion", f"{name}/{day}")
        if ingest is not None and not any(line.startswith("ingested ") for line in entry.lines):
            p = ingest.payload
            q = p.get("quarantined") or p.get("rows_quarantined") or 0
            landed = p.get("landed") or p.get("rows_landed") or p.get("rows_written") or 0
            line = f"ingested {day}: {landed} outcomes landed" + (f", {q} rows quarantined" if q else "")
            reasons = p.get("quarantine_reasons") or p.get("reasons")
            if q and reasons:
                line += f" ({', '.join(f'{k} {v}' for k, v in sorted(dict(reasons).items()))})"
            entry.lines.append(line)
        for rec in self.store.list_records("retrain_decision", name):
            if rec.key in self.retrain_seen:
                continue
            self.retrain_seen.add(rec.key)
            p = rec.payload
            version = (p.get("outcome") or {}).get("candidate_version")
            kind = "retrain" if p.get("retrain") else "retrain_refused"
            run_kind = (p.get("airflow") or {}).get("run_type") or ""
            text = f"retrain_{name} ({run_kind} run): {p.get('reason')} -- {str(p.get('message', ''))[:220]}"
            if version:
                text += f"; the Kubeflow pipeline (kfp.local) registered candidate v{version}"
            entry.event(kind, text)
        entries = ledger.entries(self.store, name)
        for e in entries[self.ledger_seen:]:
            self._ledger_event(entry, e)
        self.ledger_seen = len(entries)
        ab = self.store.get_record("ab_analysis", f"{name}/{day}")
        if ab is not None and not any(line.startswith("A/B ") for line in entry.lines):
            p = ab.payload
            entry.lines.append(f"A/B analysis: {p.get('status')} -- {str(p.get('reason', ''))[:220]}")
        if since is not None:
            for r in self.airflow.runs():
                if not r["dag_id"].endswith(f"_{name}"):
                    continue
                created = dt.datetime.fromisoformat(r["run_after"].replace("Z", "+00:00")).timestamp()
                if created >= since - 1 and not any(x["run_id"] == r["dag_run_id"] for x in entry.runs):
                    entry.runs.append({"day": day.isoformat(), "dag_id": r["dag_id"], "run_id": r["dag_run_id"],
                                       "state": r["state"], "run_type": r["run_type"],
                                       "url": self._run_url(r["dag_id"], r["dag_run_id"])})

    def _ledger_event(self, entry: DayLog, e: Any) -> None:
        from evergreen.promote import ledger

        v = e.new_version
        if e.event == ledger.GATE:
            entry.event("gate", f"gate on candidate v{v}: {e.outcome} -- {e.reason[:200]}", e.report_uri or None)
        elif e.event == ledger.APPROVAL:
            entry.lines.append(f"ledger: approval {e.outcome} ({e.reason[:120]})")
        elif e.event == ledger.ALIAS_MOVE:
            first = e.previous_version is None and e.alias == tracking.CHAMPION
            what = (f"v{e.previous_version} removed" if v is None else f"set to v{v} (first model)" if first
                    else f"set to v{v}" if e.previous_version is None else f"moved to v{v} (was v{e.previous_version})")
            kind = "promotion" if e.alias == tracking.CHAMPION and v is not None else "alias"
            if kind == "promotion" and e.previous_version is None:
                kind = "bootstrap"
            entry.event(kind, f"{e.alias} {what} ({e.actor.dag_id}) -- {e.reason[:160]}")
        elif e.event == ledger.AB_START:
            entry.event("ab_start", f"A/B test started: challenger v{v} -- {e.reason[:160]}")
        elif e.event == ledger.AB_STOP:
            entry.event("ab_decision", f"A/B test ended ({e.outcome}): {e.reason[:220]}")
        elif e.event == ledger.ROLLBACK:
            entry.event("rollback", f"champion rolled back to v{v} (was v{e.previous_version}) -- {e.reason[:160]}")

    def _run_url(self, dag_id: str, rid: str) -> str:
        from evergreen.links import airflow_run_url

        return airflow_run_url("http://localhost:8080", dag_id, rid)


def demo_config(folder: Path, scenario: Scenario, source: Path) -> Path:
    """The project's model config with the demo's settings for a month squeezed into minutes (named, reasoned)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for name, block in (doc.get("models") or {}).items():
            block["start_date"] = scenario.first_day.isoformat()
            block["end_date"] = (scenario.last_day + dt.timedelta(days=3)).isoformat()
            # outcomes land the day after the request (production churn: 30 days), so a month shows decay
            block.setdefault("performance", {}).update(label_delay_days=1, window_days=1)
            # a drift that persists signals every day: retrain on it at most every cooldown_hours (simulated)
            block.setdefault("retrain", {}).update(training_window_days=5, min_new_rows=1000,
                                                   cooldown_hours=scenario.cooldown_hours)
            gate = block.setdefault("gate", {})
            # The first model waits for a person (the approval the demo answers as ops). A later candidate skips
            # the A/B test only when its gain's interval on the holdout (1,000 rows: about +-0.013 ROC AUC) clears
            # +0.01; one about as good as the champion is non-inferior within 0.02 and goes to an A/B test.
            gate.update(first_model="approval_required", approval="never", approval_timeout_hours=1, margin=0.02,
                        superiority_margin=0.01)
            block["ab_test"] = {**block.get("ab_test", {}), "mode": "split", "metric": "model_metric",
                                "better": None, "min_detectable_effect": 0.03, "sequential_tuning": 3000,
                                "max_days": scenario.ab_max_days}
            block.setdefault("serving", {}).update(poll_interval_s=1.0)
        (folder / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def replace(scenario: Scenario, **changes: Any) -> Scenario:
    return dataclasses.replace(scenario, **changes)
