"""MlflowHook: tracking URI from the ``mlflow_default`` Connection (never with its credentials), credentials handed
to the client through MLflow's own lookup, and the embedded SQLite store only in embedded mode."""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk.exceptions import AirflowConfigException

from evergreen.hooks.mlflow import MlflowHook

PASSWORD = "s3cret/pw planted"


def set_conn(monkeypatch, conn: dict) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize(
    "conn, uri",
    [
        ({"conn_type": "http", "extra": {"uri": "https://mlflow.example.org/tracking"}},
         "https://mlflow.example.org/tracking"),
        ({"conn_type": "http", "host": "mlflow.internal", "port": 5000}, "http://mlflow.internal:5000"),
        ({"conn_type": "http", "host": "mlflow.internal", "port": 443}, "https://mlflow.internal:443"),
        ({"conn_type": "http", "host": "mlflow.internal", "schema": "https"}, "https://mlflow.internal"),
        ({"conn_type": "http", "host": "https://mlflow.internal"}, "https://mlflow.internal"),
        ({"conn_type": "http", "host": "mlflow.internal", "port": 5000, "login": "ops", "password": PASSWORD},
         "http://mlflow.internal:5000"),  # the login is the client's business, never the URI's
        ({"conn_type": "mlflow", "extra": {"uri": "postgresql://db/mlflow"}}, "postgresql://db/mlflow"),
    ],
    ids=["uri extra", "host and port", "port 443", "schema", "host with scheme", "login", "database uri"],
)
def test_tracking_uri_from_the_connection(monkeypatch, conn, uri):
    set_conn(monkeypatch, conn)
    hook = MlflowHook()
    assert hook.tracking_uri == uri
    assert hook.registry_uri == uri
    assert hook.artifact_location is None  # a server keeps its own artifact store


def test_credentials_go_to_the_subprocess_environment_only(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow.internal", "port": 5000, "login": "ops",
                           "password": PASSWORD})
    hook = MlflowHook()
    assert hook.credentials_env() == {"MLFLOW_TRACKING_USERNAME": "ops", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    assert PASSWORD not in hook.tracking_uri and "ops" not in hook.tracking_uri
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ and "MLFLOW_TRACKING_USERNAME" not in os.environ

    set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow.internal", "port": 5000})
    assert MlflowHook().credentials_env() == {}


def test_the_password_is_masked_in_task_logs(monkeypatch):
    import airflow.sdk.log

    masked: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow.internal", "login": "ops", "password": PASSWORD})
    _ = MlflowHook().tracking_uri
    assert PASSWORD in masked


@pytest.mark.parametrize(
    "conn, message",
    [
        ({"conn_type": "http", "extra": {"uri": f"http://ops:{PASSWORD.replace(' ', '%20')}@mlflow.internal"}},
         "the tracking URI carries credentials"),  # an unescaped "/" in the password: urlsplit sees no user
        ({"conn_type": "http", "extra": {"uri": "https://ops:hunter2@mlflow.internal"}},
         "the tracking URI carries credentials"),
        ({"conn_type": "http", "host": "mlflow.internal",
          "extra": {"registry_uri": "http://ops:hunter2@registry.internal"}},
         "the registry URI carries credentials"),
        ({"conn_type": "mlflow", "extra": {"uri": "postgresql://u:hunter2@db/mlflow"}},
         "the tracking URI carries credentials"),
        ({"conn_type": "http", "host": "mlflow.internal", "login": "ops"}, "has a login but no password"),
        ({"conn_type": "http", "host": "mlflow.internal", "password": PASSWORD}, "has a password but no login"),
        ({"conn_type": "mlflow", "extra": {"uri": "sqlite:///tmp/m.db"}, "login": "ops", "password": PASSWORD},
         "only an http\\(s\\) MLflow server accepts"),
    ],
    ids=["unescaped userinfo in uri", "userinfo in uri", "userinfo in registry uri", "database password", "login only", "password only",
         "login on sqlite"],
)
def test_credentials_outside_login_and_password_are_refused(monkeypatch, conn, message):
    set_conn(monkeypatch, conn)
    with pytest.raises(AirflowConfigException, match=f"Connection 'mlflow_default'.*{message}") as raised:
        _ = MlflowHook().tracking_uri
    assert PASSWORD not in str(raised.value) and "hunter2" not in str(raised.value)


def test_registry_uri_extra(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow.internal", "port": 5000,
                           "extra": {"registry_uri": "http://registry.internal:5001"}})
    hook = MlflowHook()
    client = hook.get_conn()
    assert client._tracking_client.tracking_uri == "http://mlflow.internal:5000"
    assert client._registry_uri == "http://registry.internal:5001"


def test_a_connection_without_host_or_uri_is_a_config_error(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "http"})
    with pytest.raises(AirflowConfigException, match="'mlflow_default' has no host and no 'uri' extra"):
        _ = MlflowHook().tracking_uri


def test_links_come_from_the_public_base_url_never_from_the_tracking_uri(monkeypatch):
    """A link ends up in records, Slack and e-mail: ``platform.mlflow_base_url`` or nothing."""
    import dataclasses

    import evergreen.config
    from evergreen.links import mlflow_run_url
    from evergreen.monitor.runs import run_url

    set_conn(monkeypatch, {"conn_type": "http", "host": "mlflow.internal", "port": 5000, "login": "ops",
                           "password": PASSWORD})
    hook = MlflowHook()
    config = evergreen.config.get_config()

    def platform(base_url):
        changed = dataclasses.replace(config, platform=dataclasses.replace(config.platform, mlflow_base_url=base_url))
        monkeypatch.setattr(evergreen.config, "get_config", lambda: changed)

    platform(None)
    assert run_url(hook, "7", "abc") is None
    platform("https://mlflow.example.org/")
    assert run_url(hook, "7", "abc") == "https://mlflow.example.org/#/experiments/7/runs/abc"
    # a base URL written with credentials loses them
    assert mlflow_run_url("https://ops:hunter2@mlflow.example.org", "7", "abc") == \
        "https://mlflow.example.org/#/experiments/7/runs/abc"


# --- a fake MLflow server: what reaches it, with which Authorization header ------------------------------------


class FakeMlflow:
    """Answers the few REST calls the tests make and records (method, path, Authorization) of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                fake.seen.append((self.command, self.path, self.headers.get("Authorization")))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps(fake.answer(self.command, self.path)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    @staticmethod
    def answer(method: str, path: str) -> dict:
        if "experiments/search" in path:
            return {"experiments": []}
        if "registered-models/search" in path:
            return {"registered_models": []}
        if "runs/get" in path:
            run_id = path.rpartition("run_id=")[2].split("&")[0]
            return {"run": {"info": {"run_id": run_id, "run_uuid": run_id, "experiment_id": "0",
                                     "artifact_uri": f"mlflow-artifacts:/0/{run_id}/artifacts",
                                     "status": "RUNNING", "lifecycle_stage": "active"}, "data": {}}}
        return {}

    def __enter__(self) -> FakeMlflow:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_credentials_reach_the_server_as_basic_auth_for_tracking_registry_and_artifacts(monkeypatch):
    with FakeMlflow() as server:
        set_conn(monkeypatch, {"conn_type": "http", "host": "127.0.0.1", "port": server.port,
                               "login": "ops", "password": PASSWORD})
        client = MlflowHook().get_conn()
        assert client.search_experiments() == []
        assert client.search_registered_models() == []
        # an artifact proxied by the server (mlflow-artifacts:/, as docker-compose.yaml runs it), as a monitoring
        # run uploads its report
        client.log_text(f"run-{uuid.uuid4().hex}", "<html/>", "report.html")
    expected = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    paths = {path.partition("?")[0]: auth for _, path, auth in server.seen}
    assert any("experiments/search" in p for p in paths) and any("registered-models/search" in p for p in paths)
    assert any("mlflow-artifacts/artifacts/0/run-" in p and p.endswith("/report.html") for p in paths), paths
    assert all(auth == expected for auth in paths.values()), server.seen
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_a_server_without_credentials_gets_no_authorization(monkeypatch):
    with FakeMlflow() as server:
        set_conn(monkeypatch, {"conn_type": "http", "host": "127.0.0.1", "port": server.port})
        assert MlflowHook().get_conn().search_experiments() == []
    assert [auth for _, _, auth in server.seen] == [None]


# --- embedded defaults only in embedded mode ------------------------------------------------------------------


def test_default_is_the_embedded_store_under_evergreen_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path))
    hook = MlflowHook()
    assert hook.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert hook.registry_uri == hook.tracking_uri
    assert hook.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()
    assert hook.credentials_env() == {}

    # the real client on that store: experiments are created once, with their artifacts under the home
    first = hook.experiment_id("evergreen/churn/training")
    assert MlflowHook().experiment_id("evergreen/churn/training") == first
    experiment = hook.get_conn().get_experiment(first)
    assert experiment.artifact_location == hook.artifact_location
    assert (tmp_path / "mlflow" / "mlflow.db").exists()


@pytest.mark.parametrize("conn_env", [None, "AIRFLOW_CONN_MLFLOW_DEFUALT"], ids=["missing", "mistyped"])
def test_outside_embedded_mode_a_missing_connection_is_an_error_naming_it(monkeypatch, tmp_path, conn_env):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    if conn_env:
        monkeypatch.setenv(conn_env, json.dumps({"conn_type": "mlflow", "host": "mlflow.internal"}))
    monkeypatch.setenv("EVERGREEN_EMBEDDED", "0")
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path))
    with pytest.raises(AirflowConfigException, match="Connection 'mlflow_default'.*AIRFLOW_CONN_MLFLOW_DEFAULT"):
        MlflowHook().get_conn()
    assert not (tmp_path / "mlflow").exists()  # no SQLite file was made on the side
