"""MlflowAuthServer: a real ``mlflow server --app-name basic-auth`` on localhost, for tests only.

Everything it keeps lives under one folder: the backend store (SQLite), the auth database, and the artifacts, which
the server proxies (``mlflow-artifacts:/``, as docker-compose.yaml runs it), so clients send their credentials for
artifacts too. The admin gets a random password; users are made through the admin's REST API. The server runs in
its own process group and is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ADMIN = "admin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowAuthServer:
    def __init__(self, root: Path, *, startup_timeout: float = 180.0) -> None:
        self.root = Path(root)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the auth app refuses an admin password under 12 characters
        self.admin_password = secrets.token_urlsafe(24)
        self.startup_timeout = startup_timeout
        self.backend_db = self.root / "mlflow.db"
        self.auth_db = self.root / "auth.db"
        self.artifacts = self.root / "artifacts"
        self.log_file = self.root / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MlflowAuthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "basic_auth.ini"
        # The packaged basic_auth.ini puts its database in the working directory; this one keeps it here.
        config.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{self.auth_db}\n"
            f"admin_username = {ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "AIRFLOW_CONN_"))},
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }
        cmd = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{self.backend_db}",
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]
        with open(self.log_file, "wb") as log:
            self._process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
                                             start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 20.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # --- the admin's REST API ----------------------------------------------------------------------------

    def request(self, method: str, path: str, *, auth: tuple[str, str] | None | str = "admin",
                **kwargs: Any) -> requests.Response:
        """A request to the server, as the admin by default (``auth=None``: anonymous)."""
        if auth == "admin":
            auth = (ADMIN, self.admin_password)
        return requests.request(method, f"{self.url}{path}", auth=auth, timeout=30, **kwargs)

    def create_user(self, username: str, password: str) -> None:
        response = self.request("POST", "/api/2.0/mlflow/users/create",
                                json={"username": username, "password": password})
        response.raise_for_status()
        assert response.json()["user"]["is_admin"] is False

    def permission(self, resource_type: str, resource_id: str, username: str) -> str:
        """A user's effective permission on a resource (``experiment`` by id, ``registered_model`` by name), as the
        server's own authorization check resolves it: MANAGE for what the user created, else the default."""
        response = self.request("GET", "/api/3.0/mlflow/users/permissions/get", params={
            "username": username, "resource_type": resource_type, "resource_id": resource_id})
        response.raise_for_status()
        return response.json()["permission"]
