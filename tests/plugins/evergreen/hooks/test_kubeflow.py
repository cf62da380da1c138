"""KubeflowHook: the API host from the ``kubeflow_default`` Connection; no host means the local runner."""

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
