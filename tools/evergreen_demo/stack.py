"""The processes the demo's month runs on: an Airflow (api-server + LocalExecutor scheduler) and the scoring app.

Both are the real programs, started as ops start them (``airflow api-server``, ``airflow scheduler``,
``python -m evergreen.serve``), each in its own process group with its output in a log file under
``$EVERGREEN_HOME/demo-logs``. The demo talks to Airflow only through its REST API (triggering runs, answering an
approval, reading states) and its CLI (``airflow backfill create``), and to the scoring app only over HTTP.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evergreen_demo.runner import DemoError

BIN = Path(sys.executable).parent
ACTIVE = ("queued", "running")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on loopback, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise DemoError("no free TCP port on 127.0.0.1")


def wait_for(what: str, check: Callable[[], Any], timeout: float, log_hint: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}; see {log_hint}")
        time.sleep(every)


class Process:
    """A child in its own process group, its output in ``log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise DemoError(f"{self.name} exited with code {self.proc.returncode}; see {self.log}")

    def stop(self, grace: float = 30) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass


class Airflow:
    """The demo's Airflow: CLI for setup and backfills, the REST API for everything a person or a system does."""

    def __init__(self, env: dict[str, str], logs: Path, port: int) -> None:
        self.env, self.logs, self.port = env, logs, port
        self.base = f"http://127.0.0.1:{port}"
        self.procs: list[Process] = []
        self._token: str | None = None

    # --- CLI ------------------------------------------------------------------------------------------------

    def cli(self, *args: str, log: str, timeout: float = 600) -> str:
        path = self.logs / f"{log}.log"
        out = subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        path.write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise DemoError(f"`airflow {' '.join(args[:3])} ...` failed (exit {out.returncode}); see {path}")
        return out.stdout

    # --- processes ------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.procs = [
            Process("airflow api-server", [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port",
                                           str(self.port)], self.env, self.logs / "airflow-api-server.log"),
            Process("airflow scheduler", [str(BIN / "airflow"), "scheduler"], self.env,
                    self.logs / "airflow-scheduler.log"),
        ]
        wait_for("Airflow's API server", self._healthy, 180, str(self.logs / "airflow-api-server.log"), every=1)
        time.sleep(1)  # a port taken meanwhile by another program: our server exits, theirs answered the check
        for proc in self.procs:
            proc.check()
        try:
            self.call("GET", "/api/v2/version")
        except DemoError as exc:
            raise DemoError(f"the Airflow API on port {self.port} does not accept this home's admin ({exc}): another "
                            "Airflow is probably listening there; stop it or try again") from None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs = []

    def _healthy(self) -> bool:
        for proc in self.procs:
            proc.check()
        try:
            with urllib.request.urlopen(f"{self.base}/api/v2/monitor/health", timeout=5) as resp:
                return json.loads(resp.read())["metadatabase"]["status"] == "healthy"
        except (OSError, ValueError, KeyError):
            return False

    # --- REST -----------------------------------------------------------------------------------------------

    @property
    def admin_password(self) -> str:
        path = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        return json.loads(path.read_text())["admin"]

    def call(self, method: str, path: str, body: dict | None = None, *, ok: tuple[int, ...] = ()) -> Any:
        if self._token is None and path != "/auth/token":
            self._token = self.call("POST", "/auth/token", {"username": "admin",
                                                            "password": self.admin_password})["access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(5):
            request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code in ok:
                    return {"_status": exc.code}
                text = exc.read()[:1000].decode(errors="replace")
                if exc.code >= 500 and attempt < 4:  # SQLite busy under load: the API answers 500; try again
                    time.sleep(1 + attempt)
                    continue
                raise DemoError(f"Airflow API {method} {path}: HTTP {exc.code}: {text}") from None
            except OSError as exc:
                if attempt < 4:
                    time.sleep(1 + attempt)
                    continue
                raise DemoError(f"Airflow API {method} {path}: {exc}") from None
        raise AssertionError("unreachable")

    def trigger(self, dag_id: str, run_id: str, *, interval: tuple[str, str] | None = None,
                conf: dict | None = None) -> tuple[str, bool]:
        """Create a run (manual, as the UI's trigger or an ops script does); ``(run_id, created)`` -- False when
        a run of that id exists already (a re-run of the demo reuses it)."""
        body: dict[str, Any] = {"dag_run_id": run_id, "conf": conf or {}}
        if interval is None:
            body["logical_date"] = None
        else:
            body.update(logical_date=interval[0], data_interval_start=interval[0], data_interval_end=interval[1])
        out = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body, ok=(409,))
        return run_id, out.get("_status") != 409

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}")

    def runs(self, dag_id: str = "~", **filters: Any) -> list[dict]:
        query = urllib.parse.urlencode({"limit": 100, "order_by": "-run_after", **filters}, doseq=True)
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?{query}")["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}

    def queued_events(self, dag_id: str) -> int:
        out = self.call("GET", f"/api/v2/dags/{dag_id}/assets/queuedEvents", ok=(404,))
        return len(out.get("queued_events") or [])

    def hitl(self, dag_id: str, run_id: str, task_id: str) -> dict | None:
        out = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances/{task_id}/-1/hitlDetails",
                        ok=(404,))
        return None if out.get("_status") == 404 else out

    def answer(self, dag_id: str, run_id: str, task_id: str, option: str) -> dict:
        return self.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances/{task_id}/-1/hitlDetails",
                         {"chosen_options": [option], "params_input": {}})


def q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


class Serving:
    """The scoring app (``python -m evergreen.serve``) of one model, on loopback."""

    def __init__(self, model: str, env: dict[str, str], logs: Path, port: int) -> None:
        self.model, self.env, self.logs, self.port = model, env, logs, port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: Process | None = None

    def start(self) -> None:
        self.proc = Process("the scoring app", [sys.executable, "-m", "evergreen.serve", "--model", self.model,
                                                "--host", "127.0.0.1", "--port", str(self.port), "--log-level",
                                                "warning"], self.env, self.logs / "serving.log")
        wait_for("the scoring app", lambda: self.state() is not None, 120, str(self.proc.log))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace=60)  # SIGTERM drains the prediction log into the store
            self.proc = None

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def state(self) -> dict | None:
        """``/ready``'s answer (``arms``: version per arm), or None while the app is not listening."""
        if self.proc is not None:
            self.proc.check()
        try:
            return self.get("/ready")[1]
        except OSError:
            return None

    def arms(self) -> dict[str, str]:
        state = self.state() or {}
        return dict(state.get("arms") or {})

    def predict(self, records: list[dict]) -> list[dict]:
        data = json.dumps({"instances": records}).encode()
        request = urllib.request.Request(self.base + "/predict", data=data,
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return json.loads(resp.read())["predictions"]
        except urllib.error.HTTPError as exc:
            raise DemoError(f"the scoring app answered HTTP {exc.code}: {exc.read()[:500]!r}; see "
                            f"{self.logs / 'serving.log'}") from None
