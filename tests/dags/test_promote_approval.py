"""promote_churn's human approval against a real Airflow: api-server + LocalExecutor scheduler (tests/airflow_stack.py).

``dag.test()`` never resolves a Human-in-the-loop task (it waits for an answer from outside and has no timeout
sweep), so this runs the DAG the way production does, with a gate policy that asks for approval:

1. an **Asset-triggered** run: the candidate Asset event (posted through ``POST /api/v2/assets/events`` with the
   version in its extra, as ``retrain_<model>`` emits it) starts promote_churn; the approval waits with the gate
   report as its Markdown body; an admin answers Approve through ``PATCH .../hitlDetails``; ``champion`` moves and
   the ledger names who approved;
2. a **manual** run (``POST /api/v2/dags/promote_churn/dagRuns``) for a second version that nobody answers: the
   response timeout resolves to Reject, ``apply`` is skipped, ``champion`` stays, and the ledger says it timed out.

Isolated: its own EVERGREEN_HOME (store, lake, MLflow), its own config folder (the churn model with an approval
policy), its own Airflow home with only dags/promote.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from airflow_stack import airflow, free_port, stack_env, start, stop
from evergreen import lake

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "promote_churn"
TIMEOUT_HOURS = 0.0125  # 45 s: long enough to answer the first request, short enough to wait out the second
GOOD = {"n_estimators": 20, "max_depth": 6}

pytestmark = pytest.mark.slow


class Api:
    """The Airflow REST API as an admin of the simple auth manager (the password the api-server generated)."""

    def __init__(self, base: str, airflow_home: Path) -> None:
        self.base = base
        passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if getattr(self, "token", None):
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from None


def wait_for(what: str, check, timeout: float, logs: Path, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    tail = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def approval_config(folder: Path) -> Path:
    """include/config with the churn gate asking a person for every move, and a short response timeout.

    The margin is wide so that the second version, trained like the first, passes the gate and reaches the approval
    step (what this module tests is the approval, not the statistics)."""
    folder.mkdir()
    for path in (REPO / "include" / "config").glob("*.y*ml"):
        doc = yaml.safe_load(path.read_text())
        churn = (doc.get("models") or {}).get("churn")
        if churn is not None:
            churn["gate"] = {**churn.get("gate", {}), "approval": "always", "margin": 0.2, "ab_test_when": "never",
                             "approval_timeout_hours": TIMEOUT_HOURS}
        (folder / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def test_approval_through_the_rest_api_and_a_timeout_that_rejects(tmp_path, monkeypatch):
    from evergreen.config import get_config
    from evergreen.hooks.store import StoreHook
    from evergreen.promote import ledger
    from evergreen_demo import simulate

    home = tmp_path / "home"
    monkeypatch.setenv("EVERGREEN_HOME", str(home))
    monkeypatch.setenv("EVERGREEN_CONFIG_DIR", str(approval_config(tmp_path / "config")))
    monkeypatch.delenv("EVERGREEN_LAKE_URI", raising=False)
    model = get_config().model("churn")
    assert model.gate.approval == "always"
    for i in range(8):  # lake days 11-02..11-09, 700 labelled rows each
        day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 700))
        lake.write_parquet_atomic(frame, lake.labelled_path("churn", day + dt.timedelta(days=1)))
    v1 = train(tmp_path, "2026-11-02", "2026-11-06", "v1")
    v2 = train(tmp_path, "2026-11-04", "2026-11-08", "v2")

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "promote.py").symlink_to(REPO / "dags" / "promote.py")
    port = free_port()
    env = stack_env(home, dags, port)
    env["AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL"] = "2"  # the awaiting-input timeout sweep
    # Asset-triggered runs are created by the scheduler's job scheduling (the DAG has no cron: nothing else runs).
    env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "True"
    airflow_home = home / "airflow"
    airflow(env, "db", "migrate", timeout=180)
    airflow(env, "pools", "set", "evergreen_registry", "1", "registry moves", timeout=120)
    airflow(env, "dags", "reserialize", timeout=180)
    airflow(env, "dags", "unpause", DAG_ID, timeout=120)

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    store = StoreHook().get_conn()
    try:
        procs += start(env, port, logs)
        base = f"http://127.0.0.1:{port}"
        wait_for("the api-server", lambda: _healthy(base), 180, logs, every=2)
        api = Api(base, airflow_home)

        # 1. the candidate Asset event starts the run; an admin approves through the REST API
        assets = api.call("GET", "/api/v2/assets?" + urllib.parse.urlencode({"name_pattern": "evergreen_churn_candidate"}))
        (asset,) = [a for a in assets["assets"] if a["name"] == "evergreen_churn_candidate"]
        api.call("POST", "/api/v2/assets/events", {"asset_id": asset["id"], "extra": {"version": v1}})
        run_id = wait_for("an asset-triggered run", lambda: _run_of_type(api, "asset_triggered"), 120, logs)
        detail = wait_for("the approval request", lambda: _hitl(api, run_id), 180, logs)
        assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
        assert f"version {v1}" in detail["subject"]
        assert "# Gate report: churn version" in detail["body"] and "| floor:roc_auc | pass |" in detail["body"]
        assert _champion() is None, "nothing moves before the answer"
        # Answer as a person would, not within a second of the request: Airflow 3.3.2's scheduler can still be
        # handling the executor's event of the paused workload, and a resume queued before it is marked up for retry
        # (its log: "finished with state success, but the task instance's state attribute is queued"); the retry
        # asks again and the first answer is lost (then the timeout rejects: nothing moves, but it is not the test).
        wait_for("the approval task to wait for input", lambda: _ti_state(api, run_id) == "awaiting_input", 120,
                 logs)
        time.sleep(8)  # > 2 scheduler loops (SCHEDULER_HEARTBEAT_SEC=2)
        answered = api.call("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances/approve/-1/hitlDetails",
                            {"chosen_options": ["Approve"], "params_input": {}})
        assert answered["chosen_options"] == ["Approve"]
        state = wait_for("the approved run to finish", lambda: _finished(api, run_id), 180, logs)
        assert state == "success", _task_states(airflow_home, run_id)
        assert _task_states(airflow_home, run_id) == {"gate": "success", "approve": "success", "apply": "success"}
        assert _champion() == v1
        mine = {e.event: e for e in ledger.entries(store, "churn") if e.actor.run_id == run_id}
        assert set(mine) == {"gate", "approval", "alias_move"}
        assert (mine["approval"].outcome, mine["approval"].actor.user) == ("approved", "admin")
        assert mine["approval"].reason == "approved by admin"

        # 2. a manual run nobody answers: the timeout resolves to Reject and nothing moves
        run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"version": v2}})
        run_id = run["dag_run_id"]
        wait_for("the second approval request", lambda: _hitl(api, run_id), 180, logs)
        state = wait_for("the unanswered run to finish", lambda: _finished(api, run_id), 240, logs, every=2)
        states = _task_states(airflow_home, run_id)
        assert states == {"gate": "success", "approve": "success", "apply": "skipped"}, states
        assert _champion() == v1
        mine = {e.event: e for e in ledger.entries(store, "churn") if e.actor.run_id == run_id}
        assert set(mine) == {"gate", "approval"}, "no alias_move without an approval"
        assert mine["approval"].outcome == "timed_out" and mine["approval"].actor.user is None
        assert "rejected by default" in mine["approval"].reason
        assert state == "success"
    finally:
        for proc in procs:
            stop(proc)
        if os.environ.get("EVERGREEN_KEEP_TEST_HOME"):
            shutil.copytree(logs, Path(os.environ["EVERGREEN_KEEP_TEST_HOME"]) / "approval-logs", dirs_exist_ok=True)


def train(root: Path, start: str, end: str, run_id: str) -> str:
    from evergreen.config import get_config
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.train.data import Window
    from evergreen.train.register import MlflowTarget
    from evergreen.train.steps import run_training

    hook = MlflowHook()
    target = MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")
    result = run_training(get_config().model("churn"), Window.parse(start, end), target,
                          holdout_path=root / f"holdout-{run_id}.parquet", hyperparameters=GOOD,
                          airflow_dag_id="test", airflow_run_id=run_id)
    assert result.registered is not None, f"{run_id}: holdout metric missed the sanity floor"
    return result.registered.version


def _champion() -> str | None:
    from evergreen import tracking
    from evergreen.hooks.mlflow import MlflowHook

    return tracking.aliases(MlflowHook().get_conn(), "churn").get("champion")


def _q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5) as resp:
            return json.loads(resp.read())["metadatabase"]["status"] == "healthy"
    except (OSError, ValueError, KeyError):
        return False


def _run_of_type(api: Api, run_type: str) -> str | None:
    runs = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    return next((r["dag_run_id"] for r in runs if r["run_type"] == run_type), None)


def _hitl(api: Api, run_id: str) -> dict | None:
    try:
        detail = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances/approve/-1/hitlDetails")
    except AssertionError as exc:  # 404 until the approval task has written its request
        if "HTTP 404" in str(exc):
            return None
        raise
    return detail


def _ti_state(api: Api, run_id: str) -> str | None:
    return api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}/taskInstances/approve")["state"]


def _finished(api: Api, run_id: str) -> str | None:
    state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{_q(run_id)}")["state"]
    return state if state in ("success", "failed") else None


def _task_states(airflow_home: Path, run_id: str) -> dict[str, str]:
    with sqlite3.connect(airflow_home / "airflow.db") as conn:
        rows = conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                            (DAG_ID, run_id)).fetchall()
    return dict(rows)
