"""Which backend a store URI opens: one table from URI scheme to the factory that builds the store.

The contract (:mod:`evergreen.store.base`) imports no backend, and a backend's client library (SQLAlchemy or
pymongo) is imported only when a URI asks for it. A scheme the platform does not ship -- an in-process stand-in
that a test suite provides -- is added with :func:`register_scheme`, so no test double lives in the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from evergreen.store.base import StoreError

if TYPE_CHECKING:
    from evergreen.store.base import Store

StoreFactory = Callable[[str], "Store"]


def _sql(uri: str) -> Store:
    from evergreen.store.sql import SqlStore

    return SqlStore(uri)


def _mongo(uri: str) -> Store:
    from evergreen.store.mongo import MongoStore

    return MongoStore(uri)


#: URI scheme -> factory. A SQLAlchemy URI may name its driver (``postgresql+psycopg://``): when the whole scheme
#: is not listed, the part before ``+`` selects the factory.
_FACTORIES: dict[str, StoreFactory] = {
    "sqlite": _sql,
    "postgresql": _sql,
    "postgres": _sql,
    "mysql": _sql,
    "mongodb": _mongo,
    "mongodb+srv": _mongo,
}


def register_scheme(scheme: str, factory: StoreFactory) -> None:
    """Let :func:`open_store` open ``scheme://...`` URIs with ``factory`` (which takes the URI)."""
    _FACTORIES[scheme.lower()] = factory


def open_store(uri: str) -> Store:
    """A store for a URI: ``sqlite:///path``, ``postgresql://...`` (SQLAlchemy) or ``mongodb://...`` (pymongo)."""
    scheme = uri.split(":", 1)[0].lower()
    factory = _FACTORIES.get(scheme) or _FACTORIES.get(scheme.split("+")[0])
    if factory is None:
        raise StoreError(
            f"store URI scheme '{scheme}' is not supported; use sqlite:///path, postgresql://host/db or mongodb://host/db"
        )
    return factory(uri)
