"""``python -m evergreen_demo`` (what ``make demo`` runs), end to end in a subprocess, twice on one fresh home.

The demo runs as a user runs it: its own process, a fresh ``EVERGREEN_HOME`` (none of this session's Airflow or
Connection settings leak in), the venv's ``bin`` first on PATH. The assertions read what the demo left behind --
the store's records and the MLflow registry of that home -- and check that its output reports exactly that. The
second run checks that re-running works: the retrain policy refuses inside its cooldown (recorded), no alias moves,
and the state fingerprint of the deterministic parts is unchanged.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evergreen.config import get_config
from evergreen_demo.runner import DAYS, FIRST_DAY

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MODEL = get_config().model("churn")  # the demo's model: the first declared
LANDING_DAYS = [FIRST_DAY + dt.timedelta(days=i + 1) for i in range(DAYS)]
WINDOW = f"{LANDING_DAYS[0]}/{LANDING_DAYS[-1] + dt.timedelta(days=1)}"
LAST_DAY = FIRST_DAY + dt.timedelta(days=DAYS - 1)
# what the land step plants: one bad row (or file) of each kind
PLANTED = {"out_of_range", "unknown_category", "unmatched", "invalid_label", "null_label", "bad_timestamp",
           "duplicate_request_id", "superseded", "null_request_id", "extra_column"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    home = tmp_path_factory.mktemp("demo-home")
    # The session's Airflow and Evergreen settings (tests/conftest.py) must not reach the demo: it builds its own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EVERGREEN_", "MLFLOW_"))}
    env["EVERGREEN_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = []
    for _ in range(2):
        done.append(subprocess.run([sys.executable, "-m", "evergreen_demo"], cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=900))
        assert done[-1].returncode == 0, f"demo failed:\n{done[-1].stdout}\n{done[-1].stderr}"
    return home, done


@pytest.fixture(scope="module")
def store(runs):
    from evergreen.store import open_store

    home, _ = runs
    with open_store(f"sqlite:///{home / 'store.db'}") as s:
        yield s


@pytest.fixture(scope="module")
def registry(runs):
    from mlflow import MlflowClient

    home, _ = runs
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_ingestion_counts_and_quarantine_reasons_are_reported(runs, store):
    _, (first, second) = runs
    reasons = set()
    for day in LANDING_DAYS:
        record = store.get_record("ingestion", f"churn/{day}")
        assert record is not None, f"no ingestion record for {day}"
        p = record.payload
        reasons |= set(p["reasons"])
        # the summary's row for the day carries the record's counts and reasons
        shown = ", ".join(f"{k}={v}" for k, v in p["reasons"].items()) or "-"
        row = re.compile(rf"^\s+{day}\s+{len(p['files'])}\s+{len(p['empty_files'])}\s+{p['rows_read']}\s+"
                         rf"{p['landed']}\s+{p['quarantined']}\s+{p['unmatched']}\s+{re.escape(shown)}$", re.M)
        assert row.search(first.stdout) and row.search(second.stdout), f"summary row for {day} missing"
    assert reasons == PLANTED
    for code in PLANTED:
        assert f"[{code}]" in first.stdout  # each quarantined row is shown with its reason


def test_bootstrap_registers_one_candidate_with_lineage_and_no_alias(runs, store, registry):
    _, (first, _) = runs
    (version,) = registry.search_model_versions("name='churn'")  # the re-run trained nothing
    tags = version.tags
    decisions = sorted(store.list_records("retrain_decision", "churn"), key=lambda r: r.ts)
    bootstrap = decisions[0].payload
    assert (bootstrap["retrain"], bootstrap["reason"]) == (True, "bootstrap")
    assert bootstrap["outcome"]["candidate_version"] == str(version.version)
    assert tags["evergreen.status"] == "candidate"
    assert tags["evergreen.training_window"] == WINDOW
    assert (tags["evergreen.airflow_dag_id"], tags["evergreen.airflow_run_id"]) == \
        ("retrain_churn", bootstrap["airflow"]["run_id"])
    assert tags["evergreen.kfp_run_id"] and tags["evergreen.data_fingerprint"]
    assert Path(tags["evergreen.holdout_uri"]).exists()  # the holdout the candidate was scored on is kept
    metric = registry.get_run(version.run_id).data.metrics["holdout_roc_auc"]
    assert metric >= MODEL.training.sanity_floor
    assert float(tags["evergreen.metric.roc_auc"]) == metric
    # only the promotion gate may set aliases; the demo never does
    assert registry.get_registered_model("churn").aliases == {}
    assert f"registered: 'churn' version {version.version}" in first.stdout
    assert f"evergreen.airflow_run_id = {bootstrap['airflow']['run_id']}" in first.stdout
    assert f"holdout roc_auc {metric:.4f}" in first.stdout


def test_rerun_is_refused_by_the_cooldown_and_recorded(runs, store):
    _, (first, second) = runs
    decisions = sorted(store.list_records("retrain_decision", "churn"), key=lambda r: r.ts)
    assert len(decisions) == 2
    refused = decisions[1].payload
    assert (refused["retrain"], refused["reason"]) == (False, "cooldown")
    assert f"decision retrain_decision {decisions[0].key}: RETRAIN (reason 'bootstrap')" in first.stdout
    assert f"decision retrain_decision {decisions[1].key}: NO RETRAIN (reason 'cooldown')" in second.stdout
    assert refused["message"] in second.stdout


def test_monitoring_records_cannot_judge_without_a_champion(runs, store):
    _, (first, second) = runs
    for kind in ("drift", "performance"):
        record = store.get_record(kind, f"churn/{LAST_DAY}")
        assert record is not None, f"no {kind} record for {LAST_DAY}"
        p = record.payload
        assert p["status"] == "cannot_judge"
        assert p["reason"].startswith("no champion: model 'churn' has no version with alias 'champion'")
        for out in (first.stdout, second.stdout):
            assert f"{kind} churn/{LAST_DAY}: cannot_judge -- {p['reason']}" in out
    assert "waits for the promotion gate" in first.stdout


def test_rerun_leaves_the_same_state_fingerprint_and_airflow_output_in_logs(runs):
    home, (first, second) = runs
    prints = [re.findall(r"state fingerprint: ([0-9a-f]{16})", r.stdout) for r in (first, second)]
    assert len(prints[0]) == 1 and prints[0] == prints[1]
    # the Airflow metadata DB is migrated on the first run only
    assert "migrated" in first.stdout and "is up to date" in second.stdout
    # Airflow's and the pipeline's output went to the log files, not to the terminal
    logs = {p.name for p in (home / "demo-logs").glob("*.log")}
    assert {f"ingest_feedback_churn-{d}.log" for d in LANDING_DAYS} <= logs
    assert {f"monitor_drift_churn-{LAST_DAY}.log", f"evaluate_performance_churn-{LAST_DAY}.log"} <= logs
    assert len([n for n in logs if n.startswith("retrain_churn-")]) == 2
    for r in (first, second):
        assert "Running pipeline" not in r.stdout + r.stderr and "Created dag run" not in r.stdout + r.stderr
