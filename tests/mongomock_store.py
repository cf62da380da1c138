"""mongomock as a MongoDB server for the tests: ``mongomock://host/database`` store URIs, in process.

The runtime knows only real servers (``mongodb://``); this module gives the test session (``tests/conftest.py``
calls :func:`register`) and the store benchmark a ``mongomock`` scheme. :func:`mongomock_store` builds the real
:class:`~evergreen.store.mongo.MongoStore` on an injected mongomock client, so the code under test is the code that
runs against a server. Stores opened on the same ``mongomock://host`` share its data for the life of the process,
as clients of one server do (a DAG test opens the store once per task); mongomock alone would give each client an
empty server. Only in-process code sees the scheme: a subprocess (an Airflow scheduler) would not.

A server applies each single-document write atomically; mongomock finds a document and then changes it in two
steps, so two threads writing at once could both act on what they found. :func:`patch_atomic_writes` makes each
write call of a collection one step (a lock around it), so concurrency tests meet a server's guarantee.
"""

from __future__ import annotations

import functools
import inspect
import threading
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
    patch_atomic_writes()
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
    """Let mongomock 4.3 run pymongo >= 4.11's ``ReplaceOne`` and ``UpdateOne`` in ``bulk_write``.

    pymongo passes a ``sort`` argument mongomock's bulk builder does not accept (mongomock issue #912). The
    store never sets ``sort``; the shim accepts it only when unset, and only mongomock (a test stand-in) is
    touched.
    """
    from mongomock.collection import BulkOperationBuilder

    original = BulkOperationBuilder.add_replace
    if "sort" not in inspect.signature(original).parameters:
        def add_replace(self: Any, selector: Any, doc: Any, upsert: Any, collation: Any = None, hint: Any = None,
                        sort: Any = None) -> Any:
            if sort is not None:
                raise NotImplementedError("mongomock does not support ReplaceOne(sort=...)")
            return original(self, selector, doc, upsert, collation=collation, hint=hint)

        BulkOperationBuilder.add_replace = add_replace

    original_update = BulkOperationBuilder.add_update
    if "sort" not in inspect.signature(original_update).parameters:
        def add_update(self: Any, selector: Any, doc: Any, multi: Any = False, upsert: Any = False,
                       collation: Any = None, array_filters: Any = None, hint: Any = None, sort: Any = None) -> Any:
            if sort is not None:
                raise NotImplementedError("mongomock does not support UpdateOne(sort=...)")
            return original_update(self, selector, doc, multi=multi, upsert=upsert, collation=collation,
                                   array_filters=array_filters, hint=hint)

        BulkOperationBuilder.add_update = add_update


#: one lock for every mongomock write in the process (stronger than a server's per-document atomicity, never weaker)
_WRITE_LOCK = threading.RLock()
_WRITES = ("bulk_write", "insert_one", "insert_many", "update_one", "update_many", "replace_one", "delete_one",
           "delete_many", "find_one_and_update", "find_one_and_replace", "find_one_and_delete")


def patch_atomic_writes() -> None:
    """Make each write call of a mongomock collection atomic (see the module docstring)."""
    from mongomock.collection import Collection

    for name in _WRITES:
        method = getattr(Collection, name)
        if getattr(method, "_evergreen_atomic", False):
            continue

        @functools.wraps(method)
        def atomic(self: Any, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with _WRITE_LOCK:
                return _method(self, *args, **kwargs)

        atomic._evergreen_atomic = True  # type: ignore[attr-defined]
        setattr(Collection, name, atomic)
