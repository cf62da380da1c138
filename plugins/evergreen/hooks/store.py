"""Hook for the prediction / feedback store.

The store is chosen by the URI of one Airflow Connection (``evergreen_store``): ``sqlite:///path`` or
``postgresql://...`` selects the SQL backend, ``mongodb://...`` (conn type ``mongo``) the MongoDB backend. The URI
is taken from the Connection's ``uri`` extra when present, else built from its fields.

With no Connection, the embedded SQLite file under ``EVERGREEN_HOME`` is used in embedded mode only
(:func:`evergreen.paths.embedded_mode`: ``make demo``, ``make airflow``, the tests); anywhere else the hook raises
an ``AirflowConfigException`` naming the Connection. A conn type or URI scheme the store does not know is an
``AirflowConfigException`` too, naming the Connection (never its password).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowConfigException, AirflowNotFoundException

from evergreen.paths import embedded_mode, home, missing_connection

if TYPE_CHECKING:
    from evergreen.store.base import Store

_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "mongo": "mongodb",
    "mongodb": "mongodb",
}
#: how to define the Connection, shown when it is missing outside embedded mode (no secret in it)
_EXAMPLE = ('{"conn_type": "mongo", "host": "mongo", "port": 27017, "schema": "evergreen", '
            '"login": "...", "password": "..."}')


def connection_uri(conn: Any, what: str, schemes: dict[str, str]) -> str:
    """The URI of a Connection: its ``uri`` extra, else ``get_uri()`` with the scheme mapped for the client."""
    extra = conn.extra_dejson or {}
    if extra.get("uri"):
        return str(extra["uri"])
    scheme = schemes.get((conn.conn_type or "").lower())
    if scheme is None:
        raise AirflowConfigException(
            f"Connection '{conn.conn_id}' for the {what} has conn type '{conn.conn_type}'; "
            f"use one of {', '.join(sorted(schemes))} or set the 'uri' extra"
        )
    if scheme == "sqlite":
        if not conn.host:
            # "sqlite:///" alone is an in-memory database per connection: writes would vanish silently
            raise AirflowConfigException(
                f"Connection '{conn.conn_id}' for the {what} is a sqlite connection without a host; "
                "set the host to the database file's path"
            )
        return f"sqlite:///{conn.host}"
    uri = conn.get_uri()
    return scheme + uri[uri.index(":") :]


class StoreHook(BaseHook):
    conn_name_attr = "store_conn_id"
    default_conn_name = "evergreen_store"
    conn_type = "evergreen_store"
    hook_name = "Evergreen store"

    def __init__(self, store_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store_conn_id = store_conn_id

    @cached_property
    def uri(self) -> str:
        try:
            conn = self.get_connection(self.store_conn_id)
        except AirflowNotFoundException:
            if embedded_mode():
                return home().store_uri
            raise missing_connection(self.store_conn_id, "the Evergreen store", _EXAMPLE) from None
        return connection_uri(conn, "Evergreen store", _SCHEMES)

    def get_conn(self) -> Store:
        return self._store

    @cached_property
    def _store(self) -> Store:
        from evergreen.store import open_store
        from evergreen.store.base import StoreError

        try:
            return open_store(self.uri)
        except StoreError as exc:  # raised while opening: the URI is wrong (its scheme, its form), not the data
            raise AirflowConfigException(f"Connection '{self.store_conn_id}' for the Evergreen store: {exc}") from exc
