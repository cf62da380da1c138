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


def filesystem(uri: str) -> tuple[Any, str]:
    """``(fs, path)`` for a URI (a plain path means the local filesystem)."""
    from fsspec.core import url_to_fs

    return url_to_fs(uri)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def list_files(directory: str, suffixes: Iterable[str]) -> list[str]:
    """Files directly under ``directory`` whose names end with one of ``suffixes``, sorted, as full URIs."""
    fs, path = filesystem(directory)
    if not fs.exists(path):
        return []
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    wanted = tuple(f".{s.lstrip('.')}" for s in suffixes)
    names = [p for p in fs.ls(path, detail=False) if p.lower().endswith(wanted) and not p.rsplit("/", 1)[-1].startswith((".", "_"))]
    return sorted(prefix + p if prefix and not p.startswith(prefix) else p for p in names)


def write_atomic(uri: str, write: Callable[[Any], None], *, text: bool = False) -> str:
    """Write a file at ``uri`` (any fsspec URI) through a temporary file beside it and a rename.

    ``write`` gets the open temporary file (binary, or text with ``text=True``). Readers see the old file or the
    new one, never a half-written one. The one atomic-write rule of the platform: Parquet partitions, reference
    statistics, pipeline results.
    """
    fs, path = filesystem(uri)
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    # A unique temp name keeps two overlapping writers (a backfill and a daily run of the same day) apart.
    tmp = f"{parent}/.tmp-{name}-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "w" if text else "wb") as fh:
            write(fh)
        fs.mv(tmp, path)
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
    model: str, dataset: str, start: dt.date, end: dt.date, root: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Concatenate the partitions of ``dataset`` for days ``start <= day < end``.

    Returns the frame and the list of partition URIs read (missing days are skipped, the caller decides whether
    that is an error).
    """
    import pandas as pd

    frames, read = [], []
    day = start
    while day < end:
        uri = _join(partition_dir(model, dataset, day, root), "part-0.parquet")
        if exists(uri):
            frames.append(read_parquet(uri))
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
