"""Hook for Kubeflow Pipelines.

The API host comes from the ``kubeflow_default`` Connection (``host`` or the ``uri`` extra; optional
``namespace`` and ``existing_token`` extras, the token also from the password). An empty host, or no Connection,
means the local runner: the same compiled pipeline runs through ``kfp.local``'s SubprocessRunner.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

if TYPE_CHECKING:
    import kfp


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
            return {"host": None}
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
            "host": host,
            "namespace": extra.get("namespace", "kubeflow"),
            "existing_token": extra.get("existing_token") or conn.password or None,
        }

    @property
    def host(self) -> str | None:
        return self._settings["host"]

    @property
    def is_local(self) -> bool:
        """True when no API host is configured: pipelines run through ``kfp.local``."""
        return not self.host

    @property
    def namespace(self) -> str:
        return self._settings.get("namespace") or "kubeflow"

    def get_conn(self) -> kfp.Client:
        return self._client

    @cached_property
    def _client(self) -> kfp.Client:
        if self.is_local:
            from airflow.sdk.exceptions import AirflowConfigException

            raise AirflowConfigException(
                f"Connection '{self.kubeflow_conn_id}' has no host: pipelines run locally through kfp.local; "
                "set the Kubeflow Pipelines API host to use a remote cluster"
            )
        import kfp

        return kfp.Client(host=self.host, namespace=self.namespace, existing_token=self._settings["existing_token"])
