"""Finding and reading landed outcome files, with no judgement of their content yet.

Every entry of a day's landing folder is accounted for (:func:`scan_landing`): a file of a supported format
(``.csv``, ``.csv.gz``, ``.csv.bz2``, ``.csv.zst``, ``.parquet``) is read; any other file or a folder is
*ignored* and listed with the reason; a hidden or marker file (``.``/``_`` prefix: ``_SUCCESS``, an upload in
flight) is *skipped* and listed. Reading is kept apart from validation so that a file whose bytes cannot be
parsed at all (not UTF-8, corrupt gzip or Parquet, no header) is told apart from a file whose rows break the
contract: the first comes back as an *unreadable* :class:`LandedFile` (its bytes kept, so the run can preserve
them in quarantine while the day's other files land), the second sends rows to quarantine. Only a failure to
fetch the bytes at all (an I/O error, which a retry may heal) raises :class:`IngestionError`. CSV values stay
strings here, so that validation sees exactly what the source system wrote and can quote it back.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen import lake

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import ModelConfig

log = logging.getLogger(__name__)

#: values read as null in CSV files (exports from pandas, R, SQL clients and spreadsheets)
NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "none")

#: compressed CSV: name suffix -> pyarrow codec (Parquet compresses inside the file)
CSV_COMPRESSIONS = {"gz": "gzip", "bz2": "bz2", "zst": "zstd"}


class IngestionError(RuntimeError):
    """A landed file's bytes cannot be fetched at all (an I/O error); the message names the file. Nothing was
    written: the task fails and its retries try again."""


@dataclass
class LandedFile:
    """One landed file as read: the frame (CSV as strings, Parquet as typed) and where each row came from.

    An *unreadable* file (``error`` set) has no frame; ``data`` keeps its bytes exactly as landed so the run can
    preserve them (at ``kept_at``, which the run sets before validation).
    """

    uri: str
    fmt: str
    frame: pd.DataFrame | None  # None: an empty or unreadable file
    row_numbers: np.ndarray | None = None  # 1-based record numbers of the frame's rows (header not counted)
    malformed: list[tuple[int, str, int]] = field(default_factory=list)  # (row number, text, fields) of bad CSV rows
    header: list[str] = field(default_factory=list)
    compression: str | None = None  # "gzip", "bz2", "zstd" for a compressed CSV
    error: str | None = None  # why the file cannot be read (the parser's message, as data)
    data: bytes | None = field(default=None, repr=False)  # the landed bytes of an unreadable file
    kept_at: str | None = None  # where the run preserves an unreadable file's bytes

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def unreadable(self) -> bool:
        return self.error is not None

    @property
    def empty(self) -> bool:
        return not self.unreadable and (self.frame is None or (len(self.frame) == 0 and not self.malformed))

    @property
    def rows(self) -> int:
        return (0 if self.frame is None else len(self.frame)) + len(self.malformed)

    @property
    def size(self) -> int | None:
        return None if self.data is None else len(self.data)

    @property
    def sha256(self) -> str | None:
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class NotRead:
    """An entry of the landing folder that is not read: its URI and why."""

    uri: str
    reason: str

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, str]:
        return {"file": self.uri, "reason": self.reason}


@dataclass
class Landing:
    """A day's landing folder: the files to read (sorted by name, the order duplicates are resolved in), the
    entries ignored (another format, a folder) and the ones skipped (hidden or marker files)."""

    directory: str
    uris: list[str]
    ignored: list[NotRead] = field(default_factory=list)
    skipped: list[NotRead] = field(default_factory=list)


def suffixes(model: ModelConfig) -> list[str]:
    """The file name suffixes read for ``model`` (``ingestion.file_formats``, CSV also compressed)."""
    out = []
    for fmt in model.ingestion.file_formats:
        fmt = fmt.lower().lstrip(".")
        out.append(fmt)
        if fmt == "csv":
            out += [f"csv.{s}" for s in CSV_COMPRESSIONS]
    return out


def scan_landing(model: ModelConfig, day: dt.date, landing_root: str | None = None) -> Landing:
    """Every entry of the day's landing folder, sorted into read, ignored and skipped (from one listing, so a file
    landing meanwhile is either in it or not, never half accounted for)."""
    directory = lake.landing_dir(model.name, day, landing_root)
    wanted = suffixes(model)
    accepted = " / ".join(f".{s}" for s in wanted)
    uris, ignored, skipped = [], [], []
    for entry in lake.list_dir(directory):
        uri = entry["uri"].rstrip("/")
        p = entry["name"].rstrip("/")
        name = p.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            skipped.append(NotRead(uri, "hidden or marker file (the name starts with '.' or '_'): not data by the "
                                        "Hadoop/Spark convention, so not read"))
        elif entry.get("type") == "directory":
            ignored.append(NotRead(uri, f"a folder: only files directly in {directory} are read; land its files "
                                        "there"))
        elif not name.lower().endswith(tuple(f".{s}" for s in wanted)):
            ignored.append(NotRead(uri, f"not a {accepted} file (ingestion.file_formats of model '{model.name}'), "
                                        "so not read; convert it to one of these and land it again, or remove it"))
        else:
            uris.append(uri)
    if ignored:
        log.warning("%s: %d entr%s not read: %s", directory, len(ignored), "y" if len(ignored) == 1 else "ies",
                    "; ".join(f"{n.name}: {n.reason}" for n in ignored))
    if skipped:
        log.info("%s: skipped hidden or marker file(s): %s", directory, ", ".join(n.name for n in skipped))
    return Landing(directory, sorted(uris), ignored, skipped)


def file_format(uri: str) -> tuple[str, str | None]:
    """``(format, compression)`` of a landed file by its name: ``("csv", "gzip")`` for ``x.csv.gz``."""
    name = uri.lower()
    if name.endswith(".parquet"):
        return "parquet", None
    for suffix, codec in CSV_COMPRESSIONS.items():
        if name.endswith(f".csv.{suffix}"):
            return "csv", codec
    return "csv", None


def read_landed_file(uri: str) -> LandedFile:
    """Read one landed file. Bytes that cannot be parsed give an unreadable :class:`LandedFile` (``error`` set,
    bytes kept); only an I/O failure fetching them raises :class:`IngestionError`, naming the file."""
    fmt, compression = file_format(uri)
    try:
        fs, path = lake.filesystem(uri)
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - any I/O failure is reported with the file's name
        raise IngestionError(f"outcome file {uri} cannot be fetched: {type(exc).__name__}: {exc}; check the "
                             "landing zone's storage and permissions, then retry the task") from exc
    what = f"{compression}-compressed CSV" if compression else fmt.upper()
    try:
        content = _decompress(data, compression) if compression else data
        if not content or content.isspace():  # (isspace: no copy of a large file, unlike strip)
            return LandedFile(uri, fmt, None, compression=compression)
        if fmt == "parquet":
            return _read_parquet(uri, content)
        lf = _read_csv(uri, content)
        lf.compression = compression
        return lf
    except Exception as exc:  # noqa: BLE001 - pyarrow and the codecs raise several types for corrupt input
        why = str(exc) if isinstance(exc, _Unreadable) else f"{type(exc).__name__}: {exc}"
        error = f"cannot be read as {what}: {why if len(why) <= 500 else why[:497] + '...'}"
        log.warning("outcome file %s %s", uri, error)
        return LandedFile(uri, fmt, None, compression=compression, error=error, data=data)


def _decompress(data: bytes, codec: str) -> bytes:
    import pyarrow as pa

    with pa.CompressedInputStream(pa.BufferReader(data), codec) as stream:
        return stream.read()


class _Unreadable(ValueError):
    """Bytes that are no outcome file (not UTF-8, no header line); the message says why without a type name."""


def _read_parquet(uri: str, data: bytes) -> LandedFile:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    frame = table.to_pandas()
    return LandedFile(uri, "parquet", frame, np.arange(1, len(frame) + 1), header=list(table.column_names))


def _read_csv(uri: str, data: bytes) -> LandedFile:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        data.decode("utf-8")  # checked whole here so the message can say where, not only pyarrow's "invalid UTF8"
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _Unreadable(f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} (byte offset "
                          f"{exc.start}) is not valid UTF-8; export it as UTF-8") from None
    first_line = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    header = next(csv.reader([first_line]), [])
    if not any(h.strip() for h in header):
        raise _Unreadable("the file has no header line; the first line must name the columns")
    malformed: list[tuple[int, str, int]] = []

    def invalid(row: Any) -> str:
        # single-threaded parsing numbers records from 1 with the header as record 1
        malformed.append((int(row.number) - 1, row.text, int(row.actual_columns)))
        return "skip"

    # A repeated header name is kept apart here (and reported by validation from ``header``).
    names = [h if header.index(h) == i else f"{h}.{i}" for i, h in enumerate(header)]
    table = pcsv.read_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False),
        parse_options=pcsv.ParseOptions(invalid_row_handler=invalid),
        convert_options=pcsv.ConvertOptions(
            column_types={n: pa.string() for n in names},
            null_values=list(NULL_TOKENS),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    frame = table.to_pandas()
    total = len(frame) + len(malformed)
    numbers = np.arange(1, total + 1)
    if malformed:
        numbers = np.setdiff1d(numbers, [m[0] for m in malformed], assume_unique=True)
    return LandedFile(uri, "csv", frame, numbers, malformed, header)
