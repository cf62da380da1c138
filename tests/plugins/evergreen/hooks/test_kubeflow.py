"""KubeflowHook: the API host from the ``kubeflow_default`` Connection; kfp.local when the Connection says
``{"mode": "local"}``, or, in embedded mode only, when there is no Connection or no host."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowConfigException

from evergreen.hooks.kubeflow import KubeflowHook


def set_conn(monkeypatch, conn: dict) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", json.dumps(conn))


def test_local_without_a_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", raising=False)
    hook = KubeflowHook()
    assert hook.is_local and hook.host is None
    assert hook.namespace == "kubeflow"


def test_local_with_a_connection_without_host(monkeypatch):
    set_conn(monkeypatch, {"conn_type": "kubeflow", "extra": {"namespace": "ml"}})
    hook = KubeflowHook()
    assert hook.is_local
    assert hook.namespace == "ml"


def test_get_conn_in_local_mode_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", raising=False)
    with pytest.raises(AirflowConfigException, match=r"'kubeflow_default' has no host.*kfp\.local"):
        KubeflowHook().get_conn()


@pytest.mark.parametrize(
    "conn, host",
    [
        ({"conn_type": "kubeflow", "host": "kfp.internal", "port": 8888}, "http://kfp.internal:8888"),
        ({"conn_type": "kubeflow", "host": "kfp.internal", "schema": "https"}, "https://kfp.internal"),
        ({"conn_type": "kubeflow", "host": "https://kfp.example.org/pipeline"}, "https://kfp.example.org/pipeline"),
        ({"conn_type": "kubeflow", "host": "ignored", "extra": {"uri": "https://kfp.example.org"}},
         "https://kfp.example.org"),
    ],
    ids=["host and port", "schema", "host with scheme", "uri extra"],
)
def test_host_from_the_connection(monkeypatch, conn, host):
    set_conn(monkeypatch, conn)
    hook = KubeflowHook()
    assert hook.host == host
    assert not hook.is_local


def test_get_conn_talks_to_the_configured_api_server(monkeypatch):
    from fakes.kfp_api import FakeKfpApiServer

    with FakeKfpApiServer() as server:
        set_conn(monkeypatch, {"conn_type": "kubeflow", "host": server.url, "password": "token",
                               "extra": {"namespace": "ml"}})
        hook = KubeflowHook()
        client = hook.get_conn()
        assert hook.get_conn() is client
        assert hook.namespace == "ml"
        client.get_kfp_healthz()
    assert ("GET", "/apis/v2beta1/healthz") in server.requests


# --- local runs outside embedded mode are an explicit choice ---------------------------------------------------


@pytest.fixture
def production(monkeypatch):
    monkeypatch.delenv("EVERGREEN_EMBEDDED", raising=False)


def test_without_a_connection_outside_embedded_mode_the_hook_names_it(production, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", raising=False)
    with pytest.raises(AirflowConfigException) as err:
        KubeflowHook().is_local
    message = str(err.value)
    assert "Connection 'kubeflow_default'" in message and "AIRFLOW_CONN_KUBEFLOW_DEFAULT=" in message
    assert '"mode": "local"' in message and "EVERGREEN_EMBEDDED=1" in message


def test_a_connection_without_host_or_mode_outside_embedded_mode_is_an_error(production, monkeypatch):
    set_conn(monkeypatch, {"conn_type": "kubeflow", "extra": {"namespace": "ml"}})
    with pytest.raises(AirflowConfigException,
                       match=r"'kubeflow_default' has no host and no mode.*\"mode\": \"local\""):
        KubeflowHook().is_local


def test_mode_local_is_the_explicit_choice_of_kfp_local(production, monkeypatch):
    set_conn(monkeypatch, {"conn_type": "kubeflow", "host": "", "extra": {"mode": "local", "namespace": "ml"}})
    hook = KubeflowHook()
    assert hook.is_local and hook.host is None and hook.namespace == "ml"


def test_mode_remote_with_a_host(production, monkeypatch):
    set_conn(monkeypatch, {"conn_type": "kubeflow", "host": "https://kfp.example.org", "extra": {"mode": "remote"}})
    hook = KubeflowHook()
    assert not hook.is_local and hook.host == "https://kfp.example.org"


@pytest.mark.parametrize(
    "conn, error",
    [
        ({"host": "https://kfp.example.org", "extra": {"mode": "local"}}, "mode 'local' and a host"),
        ({"extra": {"mode": "remote"}}, "mode 'remote' but no host"),
        ({"extra": {"mode": "lokal"}}, "mode 'lokal'; use one of local, remote"),
    ],
    ids=["local with a host", "remote without a host", "unknown mode"],
)
def test_a_mode_that_contradicts_the_connection_is_an_error(monkeypatch, conn, error):
    # the same in embedded mode: an explicit mode is never second-guessed
    set_conn(monkeypatch, {"conn_type": "kubeflow", **conn})
    with pytest.raises(AirflowConfigException, match=error):
        KubeflowHook().is_local
