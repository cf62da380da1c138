"""Hook for Kubeflow Pipelines.

The ``kubeflow_default`` Connection decides where pipelines run:

* **remote** -- a Kubeflow Pipelines API host (``host`` or the ``uri`` extra; optional ``namespace`` and
  ``existing_token`` extras, the token also from the password): runs are submitted with ``kfp.Client``;
* **local** -- the extra ``{"mode": "local"}`` and no host: the same compiled pipeline runs through ``kfp.local``'s
  SubprocessRunner on the worker.

Running locally outside embedded mode is an explicit choice: without a Connection, or with one that has neither a
host nor a mode, the hook uses kfp.local only in embedded mode (:func:`evergreen.paths.embedded_mode`: ``make
demo``, ``make airflow``, the tests) and raises an ``AirflowConfigException`` naming the Connection anywhere else.
A mode that contradicts the host (``local`` with a host, ``remote`` without one) is an error too.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowConfigException, AirflowNotFoundException

from evergreen.paths import EMBEDDED_ENV, embedded_mode, missing_connection

if TYPE_CHECKING:
    import kfp

MODES = ("local", "remote")
_EXAMPLE = '{"conn_type": "kubeflow", "host": "https://<kfp>/pipeline"} (or "extra": {"mode": "local"} for kfp.local)'


class KubeflowHook(BaseHook):
    conn_name_attr = "kubeflow_conn_id"
    default_conn_name = "kubeflow_default"
    conn_type = "kubeflow"
    hook_name = "Kubeflow Pipelines"

    def __init__(self, kubeflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kubeflow_conn_id = kubeflow_conn_id

    @cached_property
    def _settings(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.kubeflow_conn_id)
        except AirflowNotFoundException:
            if embedded_mode():
                return {"mode": "local", "host": None}
            raise missing_connection(self.kubeflow_conn_id, "Kubeflow Pipelines", _EXAMPLE) from None
        extra = conn.extra_dejson or {}
        host = extra.get("uri") or conn.host or None
        if host and "://" not in host:
            scheme = conn.schema or "http"
            host = f"{scheme}://{host}"
        if host and conn.port and not extra.get("uri"):
            # a host written with its scheme ("http://ml-pipeline.kubeflow") keeps the Connection's port too
            scheme, _, rest = host.partition("://")
            netloc, slash, path = rest.partition("/")
            if ":" not in netloc:
                host = f"{scheme}://{netloc}:{conn.port}{slash}{path}"
        return {
            "mode": self._mode(str(extra.get("mode") or "").strip().lower() or None, host),
            "host": host,
            "namespace": extra.get("namespace", "kubeflow"),
            "existing_token": extra.get("existing_token") or conn.password or None,
        }

    def _mode(self, mode: str | None, host: str | None) -> str:
        """The Connection's mode, checked against its host; without one, a host means remote."""
        name = f"Connection '{self.kubeflow_conn_id}'"
        if mode is None:
            if host:
                return "remote"
            if embedded_mode():
                return "local"
            raise AirflowConfigException(
                f"{name} has no host and no mode; set the Kubeflow Pipelines API host, or the extra "
                f'{{"mode": "local"}} to run pipelines with kfp.local on the worker (implicit only with '
                f"{EMBEDDED_ENV}=1)"
            )
        if mode not in MODES:
            raise AirflowConfigException(f"{name} has mode '{mode}'; use one of {', '.join(MODES)}")
        if mode == "local" and host:
            raise AirflowConfigException(
                f"{name} has mode 'local' and a host ({host}); remove the host to run with kfp.local, "
                "or set mode 'remote' to use the cluster"
            )
        if mode == "remote" and not host:
            raise AirflowConfigException(f"{name} has mode 'remote' but no host; set the Kubeflow Pipelines API host")
        return mode

    @property
    def host(self) -> str | None:
        return self._settings["host"]

    @property
    def is_local(self) -> bool:
        """True when pipelines run through ``kfp.local`` (mode ``local``, explicit or embedded)."""
        return self._settings["mode"] == "local"

    @property
    def namespace(self) -> str:
        return self._settings.get("namespace") or "kubeflow"

    def get_conn(self) -> kfp.Client:
        return self._client

    @cached_property
    def _client(self) -> kfp.Client:
        if self.is_local:
            raise AirflowConfigException(
                f"Connection '{self.kubeflow_conn_id}' has no host: pipelines run locally through kfp.local; "
                "set the Kubeflow Pipelines API host to use a remote cluster"
            )
        import kfp

        return kfp.Client(host=self.host, namespace=self.namespace, existing_token=self._settings["existing_token"])
