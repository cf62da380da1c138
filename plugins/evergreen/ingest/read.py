"""Finding and reading landed outcome files, with no judgement of their content yet.

Reading is kept apart from validation so that a file which cannot be read at all (I/O error, corrupt Parquet,
no header, not UTF-8) is told apart from a file whose rows break the contract: the first fails the whole run
before anything is written (:class:`IngestionError`), the second sends rows to quarantine. CSV values stay
strings here, so that validation sees exactly what the source system wrote and can quote it back.
"""

from __future__ import annotations

import csv
import datetime as dt
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


class IngestionError(RuntimeError):
    """A landed file cannot be read at all; the message names the file. Nothing was written."""


@dataclass
class LandedFile:
    """One landed file as read: the frame (CSV as strings, Parquet as typed) and where each row came from."""

    uri: str
    fmt: str
    frame: pd.DataFrame | None  # None: an empty file (0 bytes or a header only)
    row_numbers: np.ndarray | None = None  # 1-based record numbers of the frame's rows (header not counted)
    malformed: list[tuple[int, str, int]] = field(default_factory=list)  # (row number, text, fields) of bad CSV rows
    header: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.frame is None or (len(self.frame) == 0 and not self.malformed)

    @property
    def rows(self) -> int:
        return (0 if self.frame is None else len(self.frame)) + len(self.malformed)



def landed_uris(model: ModelConfig, day: dt.date, landing_root: str | None = None) -> list[str]:
    """The outcome files landed for ``day``, sorted by name (the order duplicates are resolved in)."""
    directory = lake.landing_dir(model.name, day, landing_root)
    files = lake.list_files(directory, model.ingestion.file_formats)
    fs, path = lake.filesystem(directory)
    if fs.exists(path):
        taken = {f.rsplit("/", 1)[-1] for f in files}
        others = sorted(n for n in (p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
                        if n not in taken and not n.startswith((".", "_")))
        if others:
            log.warning("%s: ignoring %d file(s) that are not %s: %s", directory, len(others),
                        " or ".join(model.ingestion.file_formats), ", ".join(others))
    return files


def read_landed_file(uri: str) -> LandedFile:
    """Read one landed file; raise :class:`IngestionError` naming it when it cannot be read at all."""
    fmt = "parquet" if uri.lower().endswith(".parquet") else "csv"
    try:
        fs, path = lake.filesystem(uri)
        with fs.open(path, "rb") as fh:
            data = fh.read()
    except Exception as exc:  # noqa: BLE001 - any I/O failure is reported with the file's name
        raise IngestionError(f"outcome file {uri} cannot be read: {exc}") from exc
    if not data.strip():
        return LandedFile(uri, fmt, None)
    try:
        return _read_parquet(uri, data) if fmt == "parquet" else _read_csv(uri, data)
    except IngestionError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt input
        raise IngestionError(
            f"outcome file {uri} cannot be read as {fmt.upper()}: {exc}; fix or remove the file and re-run "
            "(nothing was written for this run)"
        ) from exc


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

    first_line = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    header = next(csv.reader([first_line]), [])
    if not any(h.strip() for h in header):
        raise IngestionError(f"outcome file {uri} has no header line; the first line must name the columns")
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

