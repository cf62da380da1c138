"""Hook for MLflow tracking and the model registry.

The tracking URI comes from the ``mlflow_default`` Connection (``uri`` extra, or ``http(s)://host:port`` from its
fields); its login and password are the MLflow server's basic-auth credentials. Without a Connection the embedded
SQLite store and artifact folder under ``EVERGREEN_HOME`` are used, in embedded mode only
(:func:`evergreen.paths.embedded_mode`); anywhere else a missing Connection is an ``AirflowConfigException`` that
names it.

Credentials never leave the hook. :attr:`MlflowHook.tracking_uri` and :attr:`MlflowHook.registry_uri` carry none
(they go to XCom, pipeline parameters and files), and a URI written with ``user:password@`` is refused. The client of
:meth:`MlflowHook.get_conn` gets them through MLflow's own credential lookup (see :func:`_authorize`); a subprocess
gets them as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` in its environment
(:meth:`MlflowHook.credentials_env`). The hook never writes to ``os.environ``.
"""

from __future__ import annotations

import functools
import threading
import urllib.parse
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowConfigException, AirflowNotFoundException

from evergreen.paths import embedded_mode, home, missing_connection

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.utils.rest_utils import MlflowHostCreds

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
_EXAMPLE = '{"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "schema": "http", "login": "<user>"}'


class _Settings(NamedTuple):
    tracking_uri: str
    registry_uri: str
    credentials: tuple[str, str] | None  # (username, password) for an http(s) server


class MlflowHook(BaseHook):
    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def _settings(self) -> _Settings:
        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            if not embedded_mode():
                raise missing_connection(self.mlflow_conn_id, "MLflow tracking and the model registry",
                                         _EXAMPLE) from None
            h = home()
            h.mlflow.mkdir(parents=True, exist_ok=True)
            return _Settings(h.mlflow_tracking_uri, h.mlflow_tracking_uri, None)
        name = f"Connection '{self.mlflow_conn_id}'"
        extra = conn.extra_dejson or {}
        if extra.get("uri"):
            uri = str(extra["uri"])
        elif conn.host:
            scheme = conn.schema or ("https" if conn.port == 443 else "http")
            port = f":{conn.port}" if conn.port else ""
            host = conn.host if "://" in conn.host else f"{scheme}://{conn.host}"
            uri = f"{host}{port}"
        else:
            raise AirflowConfigException(f"{name} has no host and no 'uri' extra; set the MLflow server URL")
        registry = str(extra.get("registry_uri") or uri)
        for field, value in (("uri", uri), ("registry_uri", registry)):
            if _has_credentials(value):  # the message must not repeat the URI: it holds the secret
                raise AirflowConfigException(
                    f"{name}: the {'tracking' if field == 'uri' else 'registry'} URI carries credentials "
                    "(user:password@...); put them in the Connection's login and password instead, so that no URI "
                    "(XCom, pipeline parameters, links) ever holds them"
                )
        login, password = conn.login or None, conn.password or None
        if not (login or password):
            return _Settings(uri, registry, None)
        if not (login and password):
            raise AirflowConfigException(
                f"{name} has a {'login' if login else 'password'} but no {'password' if login else 'login'}; "
                "MLflow's basic auth needs both"
            )
        if not all(urllib.parse.urlsplit(u).scheme in ("http", "https") for u in (uri, registry)):
            raise AirflowConfigException(
                f"{name} has a login and password, which only an http(s) MLflow server accepts; its URIs are "
                f"{urllib.parse.urlsplit(uri).scheme}: and {urllib.parse.urlsplit(registry).scheme}:"
            )
        from airflow.sdk.log import mask_secret

        mask_secret(password)
        return _Settings(uri, registry, (login, password))

    @property
    def tracking_uri(self) -> str:
        """The tracking URI, without credentials: safe for XCom, pipeline parameters and files."""
        return self._settings.tracking_uri

    @property
    def registry_uri(self) -> str:
        return self._settings.registry_uri

    @cached_property
    def artifact_location(self) -> str | None:
        """Where new experiments keep artifacts: the embedded folder, or the server's default when remote."""
        if self.tracking_uri.startswith("sqlite:"):
            return home().mlflow_artifacts.as_uri()
        return None

    def credentials_env(self) -> dict[str, str]:
        """The Connection's credentials as MLflow's environment variables, for a subprocess's environment only
        (the kfp.local runner); empty when the server needs none."""
        if self._settings.credentials is None:
            return {}
        username, password = self._settings.credentials
        return {USERNAME_ENV: username, PASSWORD_ENV: password}

    def get_conn(self) -> MlflowClient:
        return self._client

    @cached_property
    def _client(self) -> MlflowClient:
        from mlflow import MlflowClient

        if not self.tracking_uri.startswith("sqlite:"):
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
            if self._settings.credentials is not None:
                _authorize(client, self.tracking_uri, self.registry_uri, *self._settings.credentials)
            return client
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


def _has_credentials(uri: str) -> bool:
    # Any "@": a password with an unescaped "/" or "#" splits where urlsplit looks for the user part.
    return "@" in uri


# --- credentials for in-process clients -----------------------------------------------------------------------
#
# MLflow asks for credentials per request: a REST store calls its ``get_host_creds()``, and the HTTP artifact
# repositories (``mlflow-artifacts:/`` proxied through the server, as in docker-compose.yaml) call
# ``mlflow.utils.credentials.get_default_host_creds(uri)``, which reads MLFLOW_TRACKING_USERNAME/_PASSWORD from
# os.environ. The seams used here, instead of the environment: the client's two stores get a ``get_host_creds`` of
# their own, and the artifact repositories' lookup is wrapped once per process to add the credentials registered
# for the server's origin (scheme, host, port). MLflow caches its stores per URI, so every client of that URI in
# the process -- the fluent API too -- uses the same credentials; the last Connection registered for an origin wins.

_ORIGINS: dict[str, tuple[str, str]] = {}
_LOCK = threading.Lock()


def _origin(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _with_registered(lookup: Any) -> Any:
    """``lookup(uri) -> MlflowHostCreds``, with the registered credentials of the URI's origin filled in."""

    @functools.wraps(lookup)
    def host_creds(uri: str) -> MlflowHostCreds:
        creds = lookup(uri)
        found = _ORIGINS.get(_origin(uri))
        if found is not None and not creds.token:
            creds.username, creds.password = found
        return creds

    host_creds.evergreen_credentials = True  # type: ignore[attr-defined]
    return host_creds


def _authorize(client: MlflowClient, tracking_uri: str, registry_uri: str, username: str, password: str) -> None:
    """Give ``client`` (and MLflow's artifact repositories for its servers) the Connection's credentials."""
    from mlflow.store.artifact import http_artifact_repo, mlflow_artifacts_repo
    from mlflow.utils.credentials import get_default_host_creds

    with _LOCK:
        for uri in (tracking_uri, registry_uri):
            _ORIGINS[_origin(uri)] = (username, password)
        for module in (http_artifact_repo, mlflow_artifacts_repo):
            if not getattr(module.get_default_host_creds, "evergreen_credentials", False):
                module.get_default_host_creds = _with_registered(module.get_default_host_creds)
    lookup = _with_registered(get_default_host_creds)
    client._tracking_client.store.get_host_creds = functools.partial(lookup, tracking_uri)
    client._get_registry_client().store.get_host_creds = functools.partial(lookup, registry_uri)
