"""Hook for MLflow tracking and the model registry.

The tracking URI comes from the ``mlflow_default`` Connection (``uri`` extra, or ``http(s)://host:port`` from its
fields; login/password become MLflow's basic-auth credentials). With no Connection, the embedded SQLite store
and artifact folder under ``EVERGREEN_HOME`` are used. The client is built with explicit URIs: the hook never
writes to ``os.environ``.
"""

from __future__ import annotations

import urllib.parse
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowConfigException, AirflowNotFoundException

from evergreen.paths import home

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowHook(BaseHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def tracking_uri(self) -> str:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            h = home()
            h.mlflow.mkdir(parents=True, exist_ok=True)
            return h.mlflow_tracking_uri
        extra = conn.extra_dejson or {}
        if extra.get("uri"):
            uri = str(extra["uri"])
        elif conn.host:
            scheme = conn.schema or ("https" if conn.port == 443 else "http")
            port = f":{conn.port}" if conn.port else ""
            host = conn.host if "://" in conn.host else f"{scheme}://{conn.host}"
            uri = f"{host}{port}"
        else:
            raise AirflowConfigException(
                f"Connection '{self.mlflow_conn_id}' has no host and no 'uri' extra; set the MLflow server URL"
            )
        return _with_credentials(uri, conn.login, conn.password)

    @cached_property
    def registry_uri(self) -> str:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return self.tracking_uri
        return str((conn.extra_dejson or {}).get("registry_uri") or self.tracking_uri)

    @cached_property
    def artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: the embedded folder, or the server's default when remote."""
        if self.tracking_uri.startswith("sqlite:"):
            return home().mlflow_artifacts.as_uri()
        return None

    def get_conn(self) -> MlflowClient:
        return self._client

    @cached_property
    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        if not self.tracking_uri.startswith("sqlite:"):
            return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        # Creating the client migrates MLflow's SQLite schema on first use; two tasks doing that at once (both
        # monitoring DAGs of a fresh install, or a backfill running intervals in parallel) leave it half-migrated
        # for good. A file lock next to the database serialises the first use.
        import fcntl
        from pathlib import Path

        db = Path(self.tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.parent / ".evergreen-mlflow-init.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def experiment_id(self, name: str) -> str:
        """The id of an experiment, created (with the hook's artifact location) on first use."""
        from evergreen.tracking import get_or_create_experiment

        return get_or_create_experiment(self.get_conn(), name, self.artifact_location)


def _with_credentials(uri: str, login: str | None, password: str | None) -> str:
    """An http(s) tracking URI carrying the Connection's login as ``user:password@``.

    MLflow's REST client sends through ``requests``, which turns a URL's credentials into HTTP basic auth; the
    documented alternative (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``) would mean writing ``os.environ``.
    Airflow masks the Connection's password in task logs; its URL-quoted form is registered here as well.
    """
    parts = urllib.parse.urlsplit(uri)
    if not login or parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return uri
    credentials = urllib.parse.quote(login, safe="")
    if password:
        quoted = urllib.parse.quote(password, safe="")
        if quoted != password:
            from airflow.sdk.log import mask_secret

            mask_secret(quoted)
        credentials += ":" + quoted
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))
