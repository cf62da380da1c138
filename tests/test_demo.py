"""``python -m evergreen_demo`` (what ``make demo`` runs) on a short month, end to end in a subprocess, twice.

The demo runs as a user runs it: its own process, a fresh ``EVERGREEN_HOME`` (none of this session's Airflow or
Connection settings leak in), the venv's ``bin`` first on PATH. It starts a real Airflow (api-server + LocalExecutor
scheduler) and the real scoring app. The short month has a few days per phase: the history and the bootstrap with
an approval (days 1-2), a quiet day, a distribution shift from day 4 (drift, a retrain, a gate that starts an A/B
test, the test's decision), a promotion once the retrain has seen the shifted labels, and a rollback on the last
day. The assertions read what the demo left behind -- the store, the registry, Airflow's metadata DB -- not its
output alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCENARIO = {"days": 13, "history_days": 2, "shift_day": 8, "concept_day": 99, "bad_input_day": 3,
            "ab_max_days": 2, "rollback_day": 13, "backfill": [7, 8]}


def _snapshot(home: Path) -> dict:
    """What the registry and the ledger hold: a re-run must not change it."""
    from mlflow import MlflowClient

    from evergreen.promote import ledger
    from evergreen.store import open_store

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with open_store(f"sqlite:///{home / 'store.db'}") as store:
        entries = [(e.event, e.ts.isoformat(), e.new_version) for e in ledger.entries(store, "churn")]
        predictions = len(store.read_predictions("churn"))
    return {"ledger": entries, "aliases": client.get_registered_model("churn").aliases,
            "versions": [v.version for v in client.search_model_versions("name='churn'")],
            "predictions": predictions}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess], list[dict]]:
    home = tmp_path_factory.mktemp("demo-home")
    # The session's Airflow and Evergreen settings (tests/conftest.py) must not reach the demo: it builds its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EVERGREEN_", "MLFLOW_"))}
    env["EVERGREEN_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done, snapshots = [], []
    for _ in range(2):
        done.append(subprocess.run([sys.executable, "-m", "evergreen_demo", "--scenario", json.dumps(SCENARIO)],
                                   cwd=REPO, env=env, capture_output=True, text=True, timeout=1500))
        assert done[-1].returncode == 0, f"demo failed:\n{done[-1].stdout[-6000:]}\n{done[-1].stderr[-4000:]}"
        snapshots.append(_snapshot(home))
    return home, done, snapshots


@pytest.fixture(scope="module")
def scenario():
    from evergreen_demo.cli import scenario_from

    return scenario_from(SCENARIO)


@pytest.fixture(scope="module")
def store(runs):
    from evergreen.store import open_store

    home = runs[0]
    with open_store(f"sqlite:///{home / 'store.db'}") as s:
        yield s


@pytest.fixture(scope="module")
def model(runs):
    from evergreen.config import load_config

    home = runs[0]
    return load_config(home / "demo-config").model("churn")


@pytest.fixture(scope="module")
def airflow_db(runs):
    home = runs[0]
    with sqlite3.connect(home / "airflow" / "airflow.db") as conn:
        yield conn


@pytest.fixture(scope="module")
def data(runs) -> dict:
    home = runs[0]
    return json.loads((home / "report" / "data.json").read_text())


def test_the_decisions_come_in_the_loops_order(store):
    """The ledger, in order: bootstrap with an approval, a drift retrain that starts an A/B test, the test's
    decision, a promotion of a candidate trained on the shifted labels, the rollback."""
    from evergreen.promote import ledger

    entries = ledger.entries(store, "churn")
    days: dict[dt.date, set] = {}
    for e in entries:
        days.setdefault(e.ts.date(), set()).add((e.event, e.alias, e.previous_version, e.new_version, e.outcome))
    # each day's phase runs on the next calendar day just after midnight (the simulated clock)
    got = [group for _, group in sorted(days.items())]
    assert got == [
        {("gate", None, None, "1", "promote"), ("approval", "champion", None, "1", "approved"),
         ("alias_move", "champion", None, "1", "promote")},
        {("gate", None, "1", "2", "ab_test"), ("alias_move", "challenger", None, "2", "ab_test"),
         ("ab_start", "challenger", None, "2", "ab_test")},
        {("alias_move", "challenger", "2", None, "stop"), ("ab_stop", "challenger", "2", None, "stop")},
        {("gate", None, "1", "3", "promote"), ("alias_move", "champion", "1", "3", "promote")},
        {("rollback", "champion", "3", "1", None)},
    ], got
    first = [e.event for e in entries[:3]]
    assert first == ["gate", "approval", "alias_move"], "the ledger reads in the order things happened"
    approval = next(e for e in entries if e.event == "approval")
    assert approval.actor.user == "admin"  # the approval was answered through the REST API
    decisions = [(r.payload["retrain"], r.payload["reason"], (r.payload["airflow"] or {}).get("run_type"))
                 for r in store.list_records("retrain_decision", "churn")]
    assert decisions[0] == (True, "bootstrap", "manual")
    trained = [d for d in decisions if d[0]]
    # drift and performance run side by side: on a day both signal, either reason starts the one training
    assert trained[0][1] == "bootstrap" and len(trained) == 3 and {d[1] for d in trained[1:]} <= {"drift", "decay"}
    assert all(d[2] == "asset_triggered" for d in decisions[1:]), "the scheduler started every later retrain"
    assert (False, "ab_test_running", "asset_triggered") in decisions  # a drift while the test ran: refused


def test_every_answered_request_was_logged(runs, store, model, scenario, data):
    """Every request the demo sent on a served day is in the store, and per day the store's count by arm and version
    is what the scoring app's answers said (the demo saved those counts from the HTTP responses)."""
    from evergreen_demo.world import requests

    home = runs[0]
    answered = json.loads((home / "demo-state.json").read_text())["days"]
    served_days = [n for n in range(1, scenario.days + 1) if n > scenario.history_days]
    for n in served_days:
        reqs = requests(model, scenario, n)
        logged = store.read_predictions("churn", request_ids=reqs.request_ids)
        assert sorted(logged["request_id"]) == sorted(reqs.request_ids), f"day {n}: requests missing in the store"
        counts = logged.groupby(["arm", "model_version"]).size()
        assert {f"{arm} v{v}": int(k) for (arm, v), k in counts.items()} == answered[scenario.date(n).isoformat()][
            "served"], f"day {n}"
    per_day = {}
    for row in data["traffic"]:
        per_day[row["day"]] = per_day.get(row["day"], 0) + row["requests"]
    assert per_day == {scenario.date(n).isoformat(): scenario.rows_per_day for n in served_days}
    # the A/B days split by the hash of the customer: both arms answered
    arms = {(r["day"], r["arm"]) for r in data["traffic"]}
    assert (scenario.date(scenario.shift_day + 1).isoformat(), "challenger") in arms


def test_each_day_ran_as_airflow_runs_for_its_interval_and_the_scheduler_reacted(airflow_db, scenario):
    rows = airflow_db.execute("SELECT dag_id, run_id, run_type, state, data_interval_start FROM dag_run").fetchall()
    for n in range(1, scenario.days + 1):
        day = scenario.date(n).isoformat()
        for kind in ("ingest_feedback", "monitor_drift", "evaluate_performance", "ab_analysis"):
            mine = [r for r in rows if r[0] == f"{kind}_churn" and r[1] == f"demo__{kind}__{day}"]
            assert len(mine) == 1 and mine[0][3] == "success", (kind, day, mine)
            assert mine[0][4].startswith(day), f"{kind} {day}: interval starts {mine[0][4]}"
    asset = [r for r in rows if r[2] == "asset_triggered"]
    assert {r[0] for r in asset} == {"retrain_churn", "promote_churn"}
    assert sum(r[0] == "promote_churn" for r in asset) == 3  # one per registered candidate
    assert all(r[3] == "success" for r in rows), [r for r in rows if r[3] != "success"]
    # the config's end_date ends the schedules: the scheduler made no run of its own for a real date
    assert not [r for r in rows if r[2] == "scheduled"]


def test_the_backfill_recomputed_facts_and_moved_nothing(airflow_db, store, scenario, data):
    from evergreen.promote import ledger

    first, last = scenario.backfill
    days = [scenario.date(n).isoformat() for n in range(first, last + 1)]
    backfilled = airflow_db.execute("SELECT data_interval_start, state FROM dag_run WHERE dag_id = "
                                    "'monitor_drift_churn' AND run_type = 'backfill'").fetchall()
    assert sorted(r[0][:10] for r in backfilled) == days and {r[1] for r in backfilled} == {"success"}
    for day in days:  # the records are the backfill's now: recomputed
        assert store.get_record("drift", f"churn/{day}").payload["backfill"] is True
    assert all(not (e.actor.run_id or "").startswith("backfill") for e in ledger.entries(store, "churn"))
    summary = dict(data["summary"])
    assert "drift verdicts the same: True, aliases unchanged: True" in summary["Backfill"]


def test_report_and_terminal_timeline(runs, data, scenario):
    home, (first, _), _ = runs
    index = (home / "report" / "index.html").read_text()
    assert 'src="month.png"' in index and (home / "report" / "month.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://localhost:8080/dags/promote_churn/runs/" in index  # the Airflow runs are linked
    assert "http://127.0.0.1:5000/#/models/churn/versions/3" in index  # and the MLflow versions
    assert any(r["report"] for r in data["drift"]), "the Evidently reports are linked"
    for n in range(1, scenario.days + 1):
        assert f"[day {n:2d}/{scenario.days}] {scenario.date(n)}" in first.stdout
    kinds = {e["kind"] for e in data["events"]}
    assert {"bootstrap", "approval", "drift", "retrain", "ab_start", "ab_decision", "promotion",
            "rollback"} <= kinds
    assert {d["version"] for d in data["live"]} >= {"1", "2"}  # the live metric per version (champion, challenger)
    assert all(d["low"] <= d["value"] <= d["high"] for d in data["live"])
    # Airflow's, the pipeline's and the scoring app's output went to log files, not to the terminal
    assert "Running pipeline" not in first.stdout + first.stderr
    assert (home / "demo-logs" / "airflow-scheduler.log").stat().st_size > 0


def test_a_rerun_reuses_the_month_and_changes_nothing(runs):
    home, (first, second), (after_first, after_second) = runs
    assert "created the Airflow metadata DB" in first.stdout
    assert "reused: the Airflow metadata DB" in second.stdout
    assert second.stdout.count("reused (ran before in this home)") == SCENARIO["days"]
    assert "[backfill] reused" in second.stdout
    assert after_second == after_first  # no ledger entry, version, alias move or prediction added
    assert after_first["ledger"] and after_first["predictions"] > 0
