"""mongomock as a MongoDB server for the tests: ``mongomock://host/database`` store URIs, in process.

The runtime knows only real servers (``mongodb://``); this module gives the test session (``tests/conftest.py``
calls :func:`register`) and the store benchmark a ``mongomock`` scheme. :func:`mongomock_store` builds the real
:class:`~evergreen.store.mongo.MongoStore` on an injected mongomock client, so the code under test is the code that
runs against a server. Stores opened on the same ``mongomock://host`` share its data for the life of the process,
as clients of one server do (a DAG test opens the store once per task); mongomock alone would give each client an
empty server. Only in-process code sees the scheme: a subprocess (an Airflow scheduler) would not.
"""

from __future__ import annotations

import inspect
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evergreen.store.mongo import MongoStore

SCHEME = "mongomock"
#: host of a mongomock:// URI -> its in-process data
SERVERS: dict[str, Any] = {}


def mongomock_client(host: str = "") -> Any:
    """A mongomock client of the in-process server ``host`` (created on first use), timezone-aware as the store
    expects its clients to be."""
    import mongomock

    patch_bulk()
    server = SERVERS.setdefault(host, mongomock.store.ServerStore())
    return mongomock.MongoClient(_store=server, tz_aware=True)


def mongomock_store(uri: str, **kwargs: Any) -> MongoStore:
    """A MongoStore for ``mongomock://host/database`` on the in-process server of ``host``."""
    from evergreen.store.mongo import MongoStore

    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != SCHEME:
        raise ValueError(f"{uri!r} is not a {SCHEME}:// URI")
    return MongoStore(uri, client=mongomock_client(parts.netloc.rpartition("@")[2]), **kwargs)  # host[:port]


def register() -> None:
    """Let ``open_store`` (and so ``StoreHook`` and the DAGs' tasks) open ``mongomock://`` URIs in this process."""
    from evergreen.store import register_scheme

    register_scheme(SCHEME, mongomock_store)


def patch_bulk() -> None:
    """Let mongomock 4.3 run pymongo >= 4.11's ``ReplaceOne`` in ``bulk_write``.

    pymongo passes a ``sort`` argument mongomock's bulk builder does not accept (mongomock issue #912). The
    store never sets ``sort``; the shim accepts it only when unset, and only mongomock (a test stand-in) is
    touched.
    """
    from mongomock.collection import BulkOperationBuilder

    original = BulkOperationBuilder.add_replace
    if "sort" in inspect.signature(original).parameters:
        return

    def add_replace(self: Any, selector: Any, doc: Any, upsert: Any, collation: Any = None, hint: Any = None,
                    sort: Any = None) -> Any:
        if sort is not None:
            raise NotImplementedError("mongomock does not support ReplaceOne(sort=...)")
        return original(self, selector, doc, upsert, collation=collation, hint=hint)

    BulkOperationBuilder.add_replace = add_replace
