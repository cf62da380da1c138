"""MlflowHook: tracking URI from the ``mlflow_default`` Connection, the embedded SQLite store by default."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk.exceptions import AirflowConfigException

from evergreen.hooks.mlflow import MlflowHook


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
        ({"conn_type": "http", "host": "mlflow.internal", "port": 5000, "login": "ops", "password": "s3cret/pw"},
         "http://ops:s3cret%2Fpw@mlflow.internal:5000"),
        ({"conn_type": "mlflow", "extra": {"uri": "postgresql://u:p@db/mlflow"}, "login": "ops"},
         "postgresql://u:p@db/mlflow"),  # credentials only go into http(s) URIs
    ],
    ids=["uri extra", "host and port", "port 443", "schema", "host with scheme", "login", "database uri"],
)
def test_tracking_uri_from_the_connection(monkeypatch, conn, uri):
    set_conn(monkeypatch, conn)
    hook = MlflowHook()
    assert hook.tracking_uri == uri
    assert hook.registry_uri == uri
    assert hook.artifact_location is None  # a server keeps its own artifact store


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


def test_login_reaches_the_server_as_basic_auth(monkeypatch):
    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            seen.append((self.path, self.headers.get("Authorization")))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"experiments": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        set_conn(monkeypatch, {"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1],
                               "login": "ops", "password": "s3cret pw"})
        assert MlflowHook().get_conn().search_experiments() == []
    finally:
        server.shutdown()
        server.server_close()
    assert seen, "the client never reached the tracking server"
    path, auth = seen[0]
    assert "experiments/search" in path
    assert auth == "Basic " + base64.b64encode(b"ops:s3cret pw").decode()


def test_default_is_the_embedded_store_under_evergreen_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path))
    hook = MlflowHook()
    assert hook.tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert hook.registry_uri == hook.tracking_uri
    assert hook.artifact_location == (tmp_path / "mlflow" / "artifacts").as_uri()

    # the real client on that store: experiments are created once, with their artifacts under the home
    first = hook.experiment_id("evergreen/churn/training")
    assert MlflowHook().experiment_id("evergreen/churn/training") == first
    experiment = hook.get_conn().get_experiment(first)
    assert experiment.artifact_location == hook.artifact_location
    assert (tmp_path / "mlflow" / "mlflow.db").exists()
