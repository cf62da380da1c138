"""The data lake and the landing zone: URI layout and atomic Parquet I/O through fsspec.

Layout (``<lake>`` and ``<landing>`` are any fsspec URI, local folders by default, see :mod:`evergreen.paths`)::

    <landing>/<model>/dt=YYYY-MM-DD/*.csv|*.parquet        outcome files landed for that day
    <lake>/<model>/labelled/dt=YYYY-MM-DD/part-0.parquet    labelled examples (features + label) of that day
    <lake>/<model>/quarantine/dt=YYYY-MM-DD/part-0.parquet  rows that failed the contract, with the reason
    <lake>/<model>/reference/version=N/...                  reference sample and statistics of a model version

Every write goes to a temporary name first and is then renamed into place, so a reader (or a retry after a
killed task) sees either the old partition or the new one, never half a file.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from evergreen.paths import lake_uri, landing_uri

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)


def _join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])


def day_str(day: dt.date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()


def landing_dir(model: str, day: dt.date | str, root: str | None = None) -> str:
    return _join(root or landing_uri(), model, f"dt={day_str(day)}")


def partition_dir(model: str, dataset: str, day: dt.date | str, root: str | None = None) -> str:
    return _join(root or lake_uri(), model, dataset, f"dt={day_str(day)}")


def labelled_path(model: str, day: dt.date | str, root: str | None = None) -> str:
    return _join(partition_dir(model, "labelled", day, root), "part-0.parquet")


def quarantine_path(model: str, day: dt.date | str, root: str | None = None) -> str:
    return _join(partition_dir(model, "quarantine", day, root), "part-0.parquet")


def reference_dir(model: str, version: str | int, root: str | None = None) -> str:
    return _join(root or lake_uri(), model, "reference", f"version={version}")


#: fsspec protocols of object stores: their folders are key prefixes, so there is nothing to create, and their
#: ``makedirs`` creates a missing bucket or container (a misspelt lake URI would silently become a new bucket).
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl"})


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def filesystem(uri: str) -> tuple[Any, str]:
    """``(fs, path)`` for a URI (a plain path means the local filesystem).

    Listings are never cached: files land from other processes (source systems, the ingest task, a re-run), and
    an object store's client would otherwise keep answering from a listing taken before they landed -- a new file
    missed, a replaced one read at its old size. The embedded local filesystem keeps no such cache anyway.
    """
    from fsspec.core import url_to_fs

    return url_to_fs(uri, use_listings_cache=False)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def list_dir(directory: str) -> list[dict[str, Any]]:
    """The entries directly under ``directory``, sorted by name: fsspec ``ls`` details (``name``, ``type``, ...)
    plus ``uri``, the entry's full URI (``s3://...`` on S3, a plain path on local disk). ``[]`` when there is no such
    folder.

    An object store's marker object for the folder itself (the empty ``dt=.../`` key the S3 console and some
    upload tools create) is not an entry of it: listed, it would look like a file named ``dt=...``.
    """
    fs, path = filesystem(directory)
    if not fs.exists(path):
        return []
    protocol = _protocols(fs)[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    itself = path.rstrip("/")
    out = []
    for entry in fs.ls(path, detail=True):
        name = entry["name"]
        if name.rstrip("/") == itself:
            continue
        out.append({**entry, "uri": prefix + name if prefix and not name.startswith(prefix) else name})
    return sorted(out, key=lambda e: e["name"])


def list_files(directory: str, suffixes: Iterable[str]) -> list[str]:
    """Files directly under ``directory`` whose names end with one of ``suffixes``, sorted, as full URIs."""
    wanted = tuple(f".{s.lstrip('.')}" for s in suffixes)
    return sorted(e["uri"] for e in list_dir(directory)
                  if e["uri"].lower().endswith(wanted) and not e["uri"].rsplit("/", 1)[-1].startswith((".", "_")))


def write_atomic(uri: str, write: Callable[[Any], None], *, text: bool = False) -> str:
    """Write a file at ``uri`` (any fsspec URI) through a temporary file beside it and a rename.

    ``write`` gets the open temporary file (binary, or text with ``text=True``). Readers see the old file or the
    new one, never a half-written one. The one atomic-write rule of the platform: Parquet partitions, reference
    statistics, pipeline results.
    """
    fs, path = filesystem(uri)
    parent, name = path.rsplit("/", 1)
    object_store = bool(set(_protocols(fs)) & _OBJECT_STORES)
    if not object_store:
        fs.makedirs(parent, exist_ok=True)
    # A unique temp name keeps two overlapping writers (a backfill and a daily run of the same day) apart.
    tmp = f"{parent}/.tmp-{name}-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "w" if text else "wb") as fh:
            write(fh)
        # On an object store the rename is a server-side copy and a delete: the final object appears whole.
        fs.mv(tmp, path)
    except FileNotFoundError as exc:
        if not object_store:
            raise
        raise FileNotFoundError(f"cannot write {uri}: {exc}; create the bucket first or fix the URI "
                                "(EVERGREEN_LAKE_URI / EVERGREEN_LANDING_URI)") from exc
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    _sweep_stale_temps(fs, parent, name)
    return uri


def write_text_atomic(text: str, uri: str) -> str:
    return write_atomic(uri, lambda fh: fh.write(text), text=True)


def write_parquet_atomic(df: pd.DataFrame, uri: str, schema: pa.Schema | None = None) -> str:
    """Write ``df`` to ``uri`` as Parquet, atomically.

    ``schema`` (a pyarrow schema) fixes the column types on disk whatever the frame's dtypes, so an empty or
    all-null partition has the same schema as a full one.
    """
    return write_atomic(uri, lambda fh: df.to_parquet(fh, index=False, schema=schema))


def _sweep_stale_temps(fs: Any, parent: str, name: str, max_age_s: float = 3600.0) -> None:
    """Remove temp files of ``name`` left by writers killed mid-write (SIGKILL skips the ``finally`` above).

    Only files older than ``max_age_s`` go, so a concurrent writer's live temp file is never touched.
    """
    import time

    for entry in fs.ls(parent, detail=True):
        base = entry["name"].rsplit("/", 1)[-1]
        if not base.startswith(f".tmp-{name}-"):
            continue
        mtime = entry.get("mtime") or entry.get("LastModified") or entry.get("updated")
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        if isinstance(mtime, (int, float)) and time.time() - mtime > max_age_s:
            log.info("removing stale temp file %s left by an interrupted write", entry["name"])
            fs.rm(entry["name"])


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def read_parquet(uri: str) -> pd.DataFrame:
    import pandas as pd

    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return pd.read_parquet(fh)


def read_partitions(
    model: str, dataset: str, start: dt.date, end: dt.date, root: str | None = None,
    each: Callable[[pd.DataFrame, dt.date], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate the partitions of ``dataset`` for days ``start <= day < end``.

    ``each(frame, day)``, when given, adjusts each day's frame before the concatenation. Returns the frame and the
    list of partition URIs read (missing days are skipped, the caller decides whether that is an error).
    """
    import pandas as pd

    frames, read = [], []
    day = start
    while day < end:
        uri = _join(partition_dir(model, dataset, day, root), "part-0.parquet")
        if exists(uri):
            frame = read_parquet(uri)
            frames.append(each(frame, day) if each is not None else frame)
            read.append(uri)
        day += dt.timedelta(days=1)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, read


def partition_rows(
    model: str, dataset: str, start: dt.date, end: dt.date, root: str | None = None
) -> dict[dt.date, int]:
    """Row count of each existing partition of ``dataset`` for days ``start <= day < end``, from the Parquet footers
    (no data is read)."""
    import pyarrow.parquet as pq

    counts: dict[dt.date, int] = {}
    day = start
    while day < end:
        uri = _join(partition_dir(model, dataset, day, root), "part-0.parquet")
        if exists(uri):
            fs, path = filesystem(uri)
            with fs.open(path, "rb") as fh:
                counts[day] = pq.ParquetFile(fh).metadata.num_rows
        day += dt.timedelta(days=1)
    return counts
