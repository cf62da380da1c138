"""The prediction log: every scored request reaches the store, off the request path, and nothing is lost silently.

::

    request thread ─append()─▶ memory queue ─writer, every flush_interval_s─▶ spool segment (write + fsync)
                                                                                 │ sealed by rows, size or age
                               store (idempotent upsert) ◀─shipper: batches, retries with backoff─┘
                               (and any optional sink, e.g. KafkaSink)

* :meth:`PredictionLog.append` only reserves spool bytes and puts the records on a queue: no I/O, no encoding, no
  wait. It returns False -- counted in ``refused_total`` and logged -- when the spool is full (the disk
  bound) or the log is closed; a record it accepted is never dropped without an error in the log.
* The writer thread takes everything queued every ``flush_interval_s``, encodes it (one checksummed JSON line per
  record), appends the group to the open segment with one ``write`` and ``fdatasync``, and seals the segment once
  it holds ``ship_batch_rows`` records, ``segment_max_bytes`` bytes, or is ``seal_interval_s`` old.
* The shipper thread reads sealed segments in order, upserts their records per model in batches of at most
  ``ship_batch_rows`` rows, hands them to each optional sink, and deletes a segment only after the store and every
  sink acknowledged all of it. A failed delivery is retried with capped exponential backoff (with jitter) for as long
  as it takes; the spool holds the records meanwhile, and the disk bound turns a long outage into counted refusals.
* :meth:`PredictionLog.start` replays the segments a previous process left (after a crash, or a close that timed
  out). The store's upsert is keyed by ``(model, request_id)``, so shipping a segment twice changes nothing.

Loss bound. After SIGKILL (or any crash of the process) the records lost are the ones appended since the writer
last took a group: at most ``flush_interval_s`` of appends, plus the group being encoded and written at that moment.
A completed ``write`` survives the death of the process (it is in the kernel's page cache); the ``fdatasync`` per
group extends the same bound to a crash of the machine. SIGTERM loses nothing: the app calls :meth:`close` (uvicorn
does in its lifespan shutdown), which writes, seals and ships everything before it returns.

Spool format. Each segment is ``<sequence number>.seg``: one record per line, ``<crc32 of the JSON, 8 hex digits>
<space><JSON>``. A line whose checksum does not match (a torn last line after a crash, a damaged block) is skipped,
counted in ``torn_total`` and logged with its segment; replay never stops on it.

Disk bound. ``max_spool_bytes`` bounds the bytes on disk plus the bytes of records queued for the writer. Queued
records are counted at 1.25 times the largest record of the last written group (``record_bytes_hint`` before the
first): the spool passes the bound only if records queued within one flush interval outgrow that estimate, and the
headroom costs nothing but a share of one flush interval's records.

Bad records. A record the store would refuse -- no request id, an id longer than the schema holds, a feature value
that is not a number, boolean or string -- is found before the write by the store's own checks
(:mod:`evergreen.store.base`), separated from its batch by bisection, and set aside in ``rejected/`` beside the
segments, with the reason (counted in ``rejected_total``, logged). A record that cannot be encoded at all is counted
the same way and logged. Everything else the store raises is taken as "unavailable" and retried: one bad row never
blocks the log, and a store outage never discards a row.

One process per spool directory: the directory is locked (``flock``) while a log runs on it; a second log fails
naming it. Give each serving process its own directory, stable across restarts (``spool/worker-0``, not a per-pid
name), so a restarted process replays what its predecessor left.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import random
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from evergreen.store.base import (
    PREDICTION_COLUMNS,
    StoreError,
    check_frame,
    feature_arrays,
    float_column,
    micros_column,
    to_utc,
)

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.store.base import Store

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
REJECTED_DIR = "rejected"
LOCK_FILE = ".lock"
_SEGMENT_NAME = re.compile(r"^(\d{12})\.seg$")
#: how often a repeated warning (spool full, store down, disk error) is logged again while it lasts
_WARN_EVERY_S = 30.0


class PredictionLogError(RuntimeError):
    """The prediction log cannot run as configured; the message names the spool directory and what to do."""


class PredictionSink(Protocol):
    """An optional second destination for logged predictions (the store is always the first).

    ``write`` delivers the records of one model (decoded from the spool: timestamps as ISO 8601 text) and raises
    when they are not all acknowledged; the log retries it like a store write and keeps the segment until it
    succeeds, so delivery is at least once. Records carry ``model`` and ``request_id``, which key them.
    """

    description: str

    def write(self, model: str, records: Sequence[Mapping[str, Any]]) -> None: ...

    def close(self) -> None: ...


# --- the spool line format -------------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return to_utc(value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy and pandas scalars
        return value.item()
    raise TypeError(f"a value of type {type(value).__name__} cannot be logged ({value!r:.80})")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_json_default)


def _record_json(record: Any) -> bytes:
    return _ENCODER.encode(record).encode()


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One spool line: the record's JSON preceded by its CRC-32 (8 hex digits and a space), ending in a newline."""
    payload = _record_json(record)
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_segment(data: bytes) -> tuple[list[Any], int]:
    """The records of a segment's bytes, and how many lines were torn or damaged (skipped)."""
    lines = data.split(b"\n")
    torn = 1 if lines.pop() else 0  # a segment ends with a newline unless its last write was cut short
    payloads = []
    for line in lines:
        payload = line[9:]
        try:
            whole = line[8:9] == b" " and int(line[:8], 16) == zlib.crc32(payload)
        except ValueError:  # not hex
            whole = False
        if whole:
            payloads.append(payload)
        else:
            torn += 1
    try:  # one parse of the whole segment: a quarter faster than a parse per line
        return json.loads(b"[" + b",".join(payloads) + b"]"), torn
    except ValueError:  # a line with a valid checksum but no valid JSON (never written by encode_line)
        pass
    records = []
    for payload in payloads:
        try:
            records.append(json.loads(payload))
        except ValueError:
            torn += 1
    return records, torn


# --- the log ---------------------------------------------------------------------------------------------------

@dataclass
class _Segment:
    path: Path
    fd: int
    opened: float  # monotonic time of the first write
    size: int = 0
    rows: int = 0


@dataclass
class _Group:
    """Records taken from the queue and encoded, until they are written."""

    data: bytes
    records: int  # accepted records in the group (lines + those that could not be encoded)
    lines: int
    reserved: int  # spool bytes append() reserved for them
    largest: int  # longest line


@dataclass
class _Sealed:
    path: Path
    size: int


class PredictionLog:
    """A local spool of scored requests, shipped to the store in batches by a background thread (see the module).

    ``store_factory`` builds the store (``lambda: open_store(uri)``); it is called in the shipper thread, again after
    every failed write (so a store that went away is reconnected). ``feature_names`` maps each model to the features
    stored with its predictions (features missing from a record are stored as null; a model not listed stores the
    features its records carry, and a warning says so). ``sinks`` are optional second destinations
    (:class:`PredictionSink`, e.g. :class:`KafkaSink`).

    Each record: ``model``, ``request_id``, ``entity_id``, ``ts`` (a UTC datetime), ``model_version``, ``arm``,
    ``prediction``, ``score`` and ``features`` (a dict of name to value). The log keeps references to the record
    dicts until the writer encodes them (within ``flush_interval_s``): do not change a record after appending it.
    """

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        store_factory: Callable[[], Store],
        feature_names: Mapping[str, Sequence[str]],
        *,
        flush_interval_s: float = 0.05,
        ship_batch_rows: int = 5000,
        max_spool_bytes: int = 512 * 1024 * 1024,
        segment_max_bytes: int = 8 * 1024 * 1024,
        seal_interval_s: float = 1.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 30.0,
        record_bytes_hint: int = 1024,
        sinks: Sequence[PredictionSink] = (),
    ) -> None:
        for name, value in (("flush_interval_s", flush_interval_s), ("seal_interval_s", seal_interval_s),
                            ("retry_initial_s", retry_initial_s), ("retry_max_s", retry_max_s)):
            if not value > 0:
                raise ValueError(f"PredictionLog {name}: {value} is not allowed; expected a number of seconds > 0")
        for name, value in (("ship_batch_rows", ship_batch_rows), ("max_spool_bytes", max_spool_bytes),
                            ("segment_max_bytes", segment_max_bytes), ("record_bytes_hint", record_bytes_hint)):
            if int(value) != value or value < 1:
                raise ValueError(f"PredictionLog {name}: {value} is not allowed; expected a whole number >= 1")
        self.spool_dir = Path(spool_dir)
        self.description = f"prediction log {self.spool_dir}"
        self._store_factory = store_factory
        self._feature_names = {model: list(names) for model, names in feature_names.items()}
        self._flush_interval_s = float(flush_interval_s)
        self._ship_batch_rows = int(ship_batch_rows)
        self._max_spool_bytes = int(max_spool_bytes)
        self._segment_max_bytes = int(segment_max_bytes)
        self._seal_interval_s = float(seal_interval_s)
        self._retry_initial_s = float(retry_initial_s)
        self._retry_max_s = float(retry_max_s)
        self._sinks = list(sinks)

        self._lock = threading.Lock()
        self._state = "new"  # -> running -> closing -> closed
        # guarded by _lock
        self._pending: list[tuple[Sequence[Mapping[str, Any]], int]] = []
        self._record_bytes = int(record_bytes_hint)
        self._reserved = 0
        self._queued = 0
        self._spooled = 0
        self._sealed: deque[_Sealed] = deque()
        self._counts = dict.fromkeys(
            ("shipped_total", "refused_total", "ship_errors_total", "rejected_total", "torn_total",
             "spool_errors_total"), 0)
        # writer thread only
        self._segment: _Segment | None = None
        self._retry_group: _Group | None = None
        self._next_seq = 1
        # shipper thread only
        self._store: Store | None = None
        self._warned_models: set[str] = set()

        self._last_warned: dict[str, float] = {}
        self._writer_stop = threading.Event()
        self._draining = threading.Event()
        self._abort = threading.Event()
        self._ship_wake = threading.Event()
        self._lock_fd: int | None = None
        self._writer = threading.Thread(target=self._write_loop, name="evergreen-predlog-writer", daemon=True)
        self._shipper = threading.Thread(target=self._ship_loop, name="evergreen-predlog-shipper", daemon=True)

    # --- public interface ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Lock the spool directory, queue the segments a previous process left for shipping, start the threads."""
        with self._lock:
            if self._state != "new":
                raise PredictionLogError(f"{self.description}: start() was already called (the log is {self._state})")
            self._state = "starting"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock_spool()
        leftovers = sorted(
            (int(m.group(1)), p) for p in self.spool_dir.iterdir() if (m := _SEGMENT_NAME.match(p.name))
        )
        for _seq, path in leftovers:
            self._sealed.append(_Sealed(path, path.stat().st_size))
        self._spooled = sum(s.size for s in self._sealed)
        self._next_seq = leftovers[-1][0] + 1 if leftovers else 1
        if leftovers:
            log.info("%s: replaying %d segments (%d bytes) left by a previous process", self.description,
                     len(leftovers), self._spooled)
        with self._lock:
            self._state = "running"
        self._writer.start()
        self._shipper.start()

    def append(self, records: Sequence[Mapping[str, Any]]) -> bool:
        """Queue records for the spool without waiting; False (counted in ``refused_total``, logged) when the spool
        is full or the log is not running. A record accepted here reaches the store, or an error says why not."""
        records = tuple(records)
        n = len(records)
        if not n:
            return True
        with self._lock:
            if self._state == "running":
                need = n * self._record_bytes
                used = self._spooled + self._reserved
                if used + need <= self._max_spool_bytes:
                    self._reserved += need
                    self._queued += n
                    self._pending.append((records, need))
                    return True
                reason = f"the spool is full ({used} of {self._max_spool_bytes} bytes spooled or queued)"
            elif self._state == "new":
                raise PredictionLogError(f"{self.description}: append() before start()")
            else:
                reason = f"the log is {self._state}"
            self._counts["refused_total"] += n
            refused = self._counts["refused_total"]
        self._warn("refused", "%s: refused %d records: %s; %d refused in total", self.description, n, reason, refused)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, write what is queued, ship every segment, stop the threads; return within ``timeout_s``.

        Whatever the store did not acknowledge by then stays in the spool (a warning says how much) and is shipped
        by the next log started on the directory. Call it from the program's shutdown path (uvicorn's lifespan
        shutdown), not from inside a signal handler: a handler that interrupts append() would wait on its lock.
        """
        with self._lock:
            if self._state != "running":
                return
            self._state = "closing"
        deadline = time.monotonic() + timeout_s
        self._writer_stop.set()
        self._writer.join(max(0.0, deadline - time.monotonic()))
        self._draining.set()
        self._ship_wake.set()
        self._shipper.join(max(0.0, deadline - time.monotonic()))
        if self._writer.is_alive() or self._shipper.is_alive():
            self._abort.set()
            self._ship_wake.set()
            self._writer.join(5.0)
            self._shipper.join(5.0)
        with self._lock:
            self._state = "closed"
            unwritten, left, left_bytes = self._queued, len(self._sealed), self._spooled
            shipped = self._counts["shipped_total"]
        if unwritten:
            log.error("%s: %d accepted records could not be written to the spool before the %.0f s close timeout "
                      "(the disk failed; see the errors above) and are lost", self.description, unwritten, timeout_s)
        if left:
            log.warning("%s: %d segments (%d bytes) were not shipped within the %.0f s close timeout; they stay in "
                        "the spool and are shipped when a log next starts on it", self.description, left, left_bytes,
                        timeout_s)
        else:
            log.info("%s: closed; %d records shipped", self.description, shipped)
        if self._writer.is_alive() or self._shipper.is_alive():
            # a thread stuck in a store or disk call: keep the directory locked so no other log races it
            log.warning("%s: a %s thread did not stop; the spool stays locked until the process exits",
                        self.description, "writer" if self._writer.is_alive() else "shipper")
        elif self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def stats(self) -> dict[str, int]:
        """``queue_depth`` (records accepted, not yet in the spool), ``spooled_bytes`` (on disk, not yet shipped),
        ``shipped_total`` (records the store acknowledged, replays included), ``refused_total``,
        ``ship_errors_total`` (failed deliveries), ``rejected_total`` (records the store cannot hold, set aside),
        ``torn_total`` (damaged spool lines skipped) and ``spool_errors_total`` (failed spool writes)."""
        with self._lock:
            return {"queue_depth": self._queued, "spooled_bytes": self._spooled, **self._counts}

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------------------------
    def _warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning that repeats while a condition lasts at most once per _WARN_EVERY_S."""
        now = time.monotonic()
        if now - self._last_warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._last_warned[key] = now
            log.warning(msg, *args)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _lock_spool(self) -> None:
        fd = os.open(self.spool_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            with self._lock:
                self._state = "new"
            raise PredictionLogError(
                f"{self.description}: the spool directory is in use by another prediction log (process {holder}); "
                "give each serving process its own spool directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _fsync_dir(self) -> None:
        fd = os.open(self.spool_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- writer thread ---------------------------------------------------------------------------------------
    def _write_loop(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            stopping = self._writer_stop.is_set()
            try:
                written = self._flush_group()
                if written and not stopping:
                    self._maybe_seal()
            except Exception:  # a bug, not a disk error: say so loudly and keep trying; the records stay queued
                self._count("spool_errors_total")
                log.exception("%s: writing the spool failed unexpectedly; retrying", self.description)
                written = False
            if not written:
                failures += 1
                if self._abort.wait(min(self._retry_max_s, self._flush_interval_s * 2 ** min(failures, 10))):
                    break
                continue
            failures = 0
            if stopping:
                with self._lock:
                    if not self._pending:
                        break
                continue
            self._writer_stop.wait(max(0.0, started + self._flush_interval_s - time.monotonic()))
        self._seal()

    def _take_group(self) -> _Group | None:
        with self._lock:
            batches, self._pending = self._pending, []
        if not batches:
            return None
        lines: list[bytes] = []
        records = reserved = 0
        for batch, need in batches:
            records += len(batch)
            reserved += need
            for record in batch:
                try:
                    lines.append(encode_line(record))
                except Exception as exc:  # noqa: BLE001 - whatever fails to encode is this record's problem
                    self._count("rejected_total")
                    request_id = record.get("request_id") if isinstance(record, Mapping) else None
                    log.error("%s: a record (request id %r) cannot be encoded and is not logged: %s",
                              self.description, request_id, exc)
        return _Group(b"".join(lines), records, len(lines), reserved, max(map(len, lines), default=0))

    def _flush_group(self) -> bool:
        """Write one group (a failed one first); False when the write failed (the group is kept for a retry)."""
        group = self._retry_group or self._take_group()
        self._retry_group = None
        if group is None:
            return True
        if group.data:
            try:
                segment = self._open_segment()
                offset = segment.size
                try:
                    view = memoryview(group.data)
                    while view:
                        view = view[os.write(segment.fd, view):]
                    os.fdatasync(segment.fd)
                except OSError:
                    self._undo_partial_write(segment, offset)
                    raise
            except OSError as exc:
                self._retry_group = group
                self._count("spool_errors_total")
                self._warn("spool", "%s: writing %d records to the spool failed (%s); retrying, the records stay "
                           "queued", self.description, group.records, exc)
                return False
            segment.size += len(group.data)
            segment.rows += group.lines
        with self._lock:
            self._reserved -= group.reserved
            self._queued -= group.records
            self._spooled += len(group.data)
            if group.largest:
                self._record_bytes = group.largest + group.largest // 4
        return True

    def _undo_partial_write(self, segment: _Segment, offset: int) -> None:
        try:
            os.ftruncate(segment.fd, offset)
        except OSError:
            # The segment keeps a torn tail, which replay skips and counts: seal it, the retry opens a new one.
            try:
                size = os.fstat(segment.fd).st_size
            except OSError:
                size = offset
            with self._lock:
                self._spooled += size - segment.size  # the torn bytes are on disk until the segment is shipped
            segment.size = size
            self._seal()

    def _open_segment(self) -> _Segment:
        if self._segment is None:
            path = self.spool_dir / f"{self._next_seq:012d}{SEGMENT_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._next_seq += 1
            self._segment = _Segment(path, fd, time.monotonic())
            self._fsync_dir()  # the new file's name survives a crash of the machine too
        return self._segment

    def _maybe_seal(self) -> None:
        segment = self._segment
        if segment is not None and (
            segment.rows >= self._ship_batch_rows
            or segment.size >= self._segment_max_bytes
            or time.monotonic() - segment.opened >= self._seal_interval_s
        ):
            self._seal()

    def _seal(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        os.close(segment.fd)
        with self._lock:
            self._sealed.append(_Sealed(segment.path, segment.size))
        self._ship_wake.set()

    # --- shipper thread --------------------------------------------------------------------------------------
    def _ship_loop(self) -> None:
        try:
            while not self._abort.is_set():
                try:
                    if not self._ship_once():
                        return
                except Exception:  # a bug, not an outage: say so loudly, keep the segments, try again later
                    self._count("ship_errors_total")
                    log.exception("%s: shipping failed unexpectedly; the segments stay in the spool, retrying in "
                                  "%.0f s", self.description, self._retry_max_s)
                    self._abort.wait(self._retry_max_s)
        finally:
            self._drop_store()
            for sink in self._sinks:
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort, the data is acknowledged
                    log.warning("%s: closing %s failed: %s", self.description, sink.description, _brief(exc))

    def _ship_once(self) -> bool:
        """Ship what is sealed, or wait for more; False when the shipper is done (drained, or close() gave up)."""
        self._ship_wake.clear()
        taken = self._take_segments()
        if taken:
            return self._ship(taken)
        if taken is not None and self._draining.is_set() and not self._writer.is_alive():
            with self._lock:
                return bool(self._sealed)
        if taken is not None:
            self._ship_wake.wait(0.5)
        return True

    def _take_segments(self) -> list[tuple[_Sealed, list[Any]]] | None:
        """The oldest sealed segments, read, up to ``ship_batch_rows`` records (at least one segment); None when a
        read failed and was waited out."""
        with self._lock:
            candidates = list(self._sealed)
        taken: list[tuple[_Sealed, list[Any]]] = []
        rows = 0
        for sealed in candidates:
            try:
                data = sealed.path.read_bytes()
            except FileNotFoundError:
                log.error("%s: segment %s vanished from the spool before it was shipped (removed by hand?); its "
                          "records are lost", self.description, sealed.path.name)
                data = b""
            except OSError as exc:
                self._count("spool_errors_total")
                self._warn("read", "%s: reading segment %s failed (%s); retrying", self.description,
                           sealed.path.name, exc)
                self._abort.wait(self._retry_initial_s)
                return None if not taken else taken
            records, torn = decode_segment(data)
            if torn:
                self._count("torn_total", torn)
                log.warning("%s: segment %s has %d torn or damaged lines (skipped: written when the process died, "
                            "or damaged on disk); its %d whole records are shipped", self.description,
                            sealed.path.name, torn, len(records))
            taken.append((sealed, records))
            rows += len(records)
            if rows >= self._ship_batch_rows:
                break
        return taken

    def _ship(self, taken: list[tuple[_Sealed, list[Any]]]) -> bool:
        """Deliver the segments' records, then delete the segments; False when close() gave up waiting."""
        by_model: dict[str, list[dict[str, Any]]] = {}
        bad: list[tuple[Any, str]] = []
        for _sealed, records in taken:
            for record in records:
                model = record.get("model") if isinstance(record, dict) else None
                if not isinstance(model, str) or not model:
                    bad.append((record, "not a record with a model name"))
                    continue
                if record.get("features") is None:
                    record["features"] = {}
                if not isinstance(record["features"], dict):
                    bad.append((record, "'features' is not a mapping of feature names to values"))
                else:
                    by_model.setdefault(model, []).append(record)
        deliveries: list[tuple[str, list[str], pd.DataFrame, list[dict[str, Any]]]] = []
        for model, rows in by_model.items():
            names = self._names(model, rows)
            for i in range(0, len(rows), self._ship_batch_rows):
                chunks, rejected = self._valid_chunks(model, rows[i : i + self._ship_batch_rows], names)
                bad.extend(rejected)
                deliveries.extend((model, names, frame, chunk) for frame, chunk in chunks)
        if bad and not self._deliver("the rejected folder", lambda: self._set_aside(taken[0][0], bad)):
            return False
        # each call below runs its lambda before the loop moves on, so the loop variables it reads are current
        for model, names, frame, chunk in deliveries:
            if not self._deliver(self._store_description(), lambda: self._upsert(model, frame, names), store=True):
                return False
            for sink in self._sinks:
                if not self._deliver(sink.description, lambda sink=sink: sink.write(model, chunk)):
                    return False
            self._count("shipped_total", len(chunk))
        for sealed, _records in taken:
            try:
                sealed.path.unlink()
            except FileNotFoundError:
                pass
            with self._lock:
                self._sealed.popleft()
                self._spooled -= sealed.size
        return True

    def _names(self, model: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
        names = self._feature_names.get(model)
        if names is None:
            if model not in self._warned_models:
                self._warned_models.add(model)
                log.warning("%s: model '%s' has no configured feature names; storing the features its records "
                            "carry", self.description, model)
            names = sorted({name for row in rows for name in row.get("features", {})})
        return names

    def _frame(self, rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> pd.DataFrame:
        """The store's prediction frame; raises ValueError or TypeError for a timestamp that is not one."""
        import pandas as pd

        columns: dict[str, Any] = {c: [row.get(c) for row in rows] for c in PREDICTION_COLUMNS}
        # the spool holds ISO 8601 text; parsed once here by the store's rule, the store's own checks and its
        # write then take the vectorised path for a datetime column
        columns["ts"] = pd.to_datetime([None if v is None else to_utc(v) for v in columns["ts"]], utc=True)
        for name in names:
            columns[name] = [row["features"].get(name) for row in rows]
        return pd.DataFrame(columns)

    def _check(self, model: str, frame: pd.DataFrame, names: Sequence[str]) -> None:
        """The store's own checks of a prediction batch, without the store: a StoreError here is the data's fault."""
        what = "predictions"
        check_frame(self.description, what, model, frame, (*PREDICTION_COLUMNS, *names))
        micros_column(self.description, what, model, frame["ts"])
        for col in ("prediction", "score"):
            float_column(self.description, what, model, frame, col)
        feature_arrays(self.description, model, frame, names)

    def _valid_chunks(
        self, model: str, rows: list[dict[str, Any]], names: Sequence[str]
    ) -> tuple[list[tuple[pd.DataFrame, list[dict[str, Any]]]], list[tuple[Any, str]]]:
        """Split rows into batches the store accepts (each checked as a whole) and the rows it would refuse, by
        bisection: a few bad rows cost a few checks of halves, not one check per row."""
        try:
            frame = self._frame(rows, names)
            self._check(model, frame, names)
        except (StoreError, TypeError, ValueError) as exc:
            if len(rows) == 1:
                return [], [(rows[0], str(exc))]
            half = len(rows) // 2
            good_a, bad_a = self._valid_chunks(model, rows[:half], names)
            good_b, bad_b = self._valid_chunks(model, rows[half:], names)
            return good_a + good_b, bad_a + bad_b
        return [(frame, rows)], []

    def _set_aside(self, first: _Sealed, bad: list[tuple[Any, str]]) -> None:
        folder = self.spool_dir / REJECTED_DIR
        folder.mkdir(exist_ok=True)
        path = folder / f"{first.path.stem}.jsonl"
        with open(path, "ab") as fh:
            for record, reason in bad:
                fh.write(_record_json({"reason": reason, "record": record}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._count("rejected_total", len(bad))
        log.error("%s: %d records cannot be stored and were set aside in %s; the first: %s", self.description,
                  len(bad), path, bad[0][1])

    def _store_description(self) -> str:
        return getattr(self._store, "description", "the store")

    def _upsert(self, model: str, frame: pd.DataFrame, names: Sequence[str]) -> None:
        if self._store is None:
            self._store = self._store_factory()
        self._store.upsert_predictions(model, frame, names)

    def _drop_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception as exc:  # noqa: BLE001 - a broken store is being replaced
                log.debug("%s: closing the store failed: %s", self.description, _brief(exc))

    def _deliver(self, what: str, fn: Callable[[], None], *, store: bool = False) -> bool:
        """Run ``fn`` until it succeeds, with capped exponential backoff; False when close() stopped waiting.
        A failed store write drops the store, so the next attempt builds a fresh one."""
        attempt = 0
        while True:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - any failure of a store or sink is retried; the spool holds
                self._count("ship_errors_total")
                if store:
                    self._drop_store()
                attempt += 1
                self._warn(f"deliver:{what}", "%s: delivering to %s failed (%s); retrying with backoff (attempt %d), "
                           "the records stay in the spool", self.description, what, _brief(exc), attempt)
                delay = min(self._retry_max_s, self._retry_initial_s * 2 ** min(attempt - 1, 30))
                if self._abort.wait(delay * random.uniform(0.5, 1.0)):
                    return False
                continue
            if attempt:
                self._last_warned.pop(f"deliver:{what}", None)
                log.info("%s: delivered to %s after %d failed attempts", self.description, what, attempt)
            return True


def _brief(exc: BaseException) -> str:
    """An exception's type and first line, shortened (a driver error may append a whole statement and its rows)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class KafkaSink:
    """An optional second sink: each prediction as one JSON message on a Kafka topic, keyed ``<model>/<request id>``.

    For a deployment that has Kafka; the store stays the one the platform reads. Uses confluent-kafka, which the
    platform does not depend on: it is imported when a sink is built, and a missing package fails there, naming it.
    ``producer_config`` is librdkafka's configuration (``bootstrap.servers``, security settings); it is never logged.
    A batch counts as delivered when the producer's flush reports every message acknowledged (set ``acks=all`` for
    the broker's durability). Tested here only against a stand-in producer, never against a real broker.
    """

    def __init__(self, topic: str, producer_config: Mapping[str, Any], *, flush_timeout_s: float = 30.0) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:
            raise PredictionLogError(
                "KafkaSink needs the confluent-kafka package, an optional dependency: pip install confluent-kafka"
            ) from exc
        self.topic = topic
        self.description = f"kafka topic '{topic}'"
        self._flush_timeout_s = flush_timeout_s
        self._producer = Producer(dict(producer_config))

    def write(self, model: str, records: Sequence[Mapping[str, Any]]) -> None:
        failed: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err)

        for record in records:
            value = _record_json(record)
            key = f"{model}/{record.get('request_id')}".encode()
            while True:
                try:
                    self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:  # the producer's local queue is full: let it send, then try again
                    self._producer.poll(0.1)
        undelivered = self._producer.flush(self._flush_timeout_s)
        if failed or undelivered:
            raise RuntimeError(
                f"{self.description}: {len(failed)} of {len(records)} messages failed"
                f"{f' (first: {failed[0]})' if failed else ''} and {undelivered} were unacknowledged after "
                f"{self._flush_timeout_s:g} s"
            )

    def close(self) -> None:
        self._producer.flush(self._flush_timeout_s)
