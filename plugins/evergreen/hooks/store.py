"""Hook for the prediction / feedback store.

The store is chosen by the URI of one Airflow Connection (``evergreen_store``): ``sqlite:///path`` or
``postgresql://...`` selects the SQL backend, ``mongodb://...`` (conn type ``mongo``) the MongoDB backend. The URI
is taken from the Connection's ``uri`` extra when present, else built from its fields. With no Connection set, the
embedded SQLite file under ``EVERGREEN_HOME`` is used.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowConfigException, AirflowNotFoundException

from evergreen.paths import home

if TYPE_CHECKING:
    from evergreen.store.base import Store

_SCHEMES = {
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "mongo": "mongodb",
    "mongodb": "mongodb",
}


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
            return home().store_uri
        return connection_uri(conn, "Evergreen store", _SCHEMES)

    def get_conn(self) -> Store:
        return self._store

    @cached_property
    def _store(self) -> Store:
        from evergreen.store import open_store

        return open_store(self.uri)
