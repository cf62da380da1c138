"""The ingestion run: the bodies the ``ingest_feedback_<model>`` DAG calls, the ``ingestion`` record, digests.

What one run does for each day of its data interval (the DAG task calls :func:`run_for_context`, which calls
:func:`ingest_interval`; so do ``python -m evergreen.ingest``, the demo and ``bench/ingest.py``):

1. read every CSV / Parquet file under ``lake.landing_dir(model, day)`` (:mod:`evergreen.ingest.read`) -- for
   *all* days of the interval before anything is written, so a file that cannot be read at all fails the run with
   its name and changes nothing;
2. validate each row against the model's contract (:mod:`evergreen.ingest.contract`), vectorised per column;
   a file-level problem (missing, partial or extra columns) sends every row of that file to quarantine;
3. look up the logged predictions of the outcome-only rows (:mod:`evergreen.ingest.join`): an outcome with no
   logged prediction is quarantined as ``unmatched`` (its features are unknown, so it could never become a
   labelled example);
4. upsert the valid outcomes into the store, write the day's labelled examples and quarantine as Parquet
   partitions (always both, possibly empty, with a fixed schema) and upsert the day's ``ingestion`` record.

Every output is a function of the landed files and the logged predictions, so re-running a day, retrying after a
crash at any point, or backfilling over days already run leaves the same state. The one cross-day rule: when the
same request id lands on several days, the store keeps the outcome with the latest outcome timestamp (a
correction lands later), ties broken by the larger label, so the result never depends on the order runs happen in.
The crash tests hold that to account: they SIGKILL ``python -m evergreen.ingest`` at each write stage
(:data:`STAGES`) and check that a retry leaves what a clean run leaves (:func:`state_digest`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.context import interval_days, is_backfill
from evergreen.ingest.contract import labelled_schema, quarantine_schema, validate_day
from evergreen.ingest.join import join_predictions, newer_outcomes, quarantine_frame
from evergreen.ingest.read import landed_uris, read_landed_file
from evergreen.store.base import Record

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.config import ModelConfig
    from evergreen.ingest.contract import DayValidation
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

RECORD_KIND = "ingestion"

# Store reads by request id are chunked so the rows the driver materialises stay bounded at any N.
_READ_CHUNK = 200_000

#: Fault injection, for the crash tests only: "<stage>[:<marker file>]" pauses the run when it reaches <stage>
#: (writing its pid to the marker file), so the test can SIGKILL it exactly there. The tests set it in the
#: environment of a ``python -m evergreen.ingest`` child process, so it is read once, at import: with it unset
#: (production) a checkpoint costs one ``is None`` test.
PAUSE_ENV = "EVERGREEN_INGEST_PAUSE_AT"
STAGES = ("read", "store", "labelled", "quarantine")
_PAUSE_AT: str | None = os.environ.get(PAUSE_ENV) or None


@dataclass
class DayResult:
    """The facts of one ingested day (the payload of its ``ingestion`` record, plus model and day)."""

    model: str
    day: str
    rows_read: int
    landed: int
    quarantined: int
    unmatched: int
    reasons: dict[str, int]
    files: list[str]
    empty_files: list[str]
    labelled_uri: str
    quarantine_uri: str

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")
        out.pop("day")
        return out

    def summary(self) -> str:
        why = ", ".join(f"{code}={n}" for code, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return (
            f"{self.model} {self.day}: {len(self.files)} file(s) ({len(self.empty_files)} empty), "
            f"{self.rows_read} rows read, {self.landed} landed, {self.quarantined} quarantined"
            f" ({self.unmatched} unmatched){': ' + why if why else ''}"
        )


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days)]


def _by_ids(read: Any, model: str, ids: Sequence[str]) -> Iterator[tuple[Sequence[str], pd.DataFrame]]:
    """``(ids, frame)`` per chunk of a store read by request id: memory stays bounded at any day size."""
    for i in range(0, len(ids), _READ_CHUNK):
        chunk = ids[i : i + _READ_CHUNK]
        yield chunk, read(model, request_ids=chunk)


def _checkpoint(stage: str) -> None:
    """Test hook: pause at ``stage`` when :data:`PAUSE_ENV` asked for it, so a test can SIGKILL us there."""
    spec = _PAUSE_AT
    if spec is None or spec.split(":", 1)[0] != stage:
        return
    marker = spec.split(":", 1)[1] if ":" in spec else ""
    log.warning("%s=%s: pausing at stage '%s' (pid %s)", PAUSE_ENV, spec, stage, os.getpid())
    if marker:
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
    time.sleep(3600)


def ingest_interval(
    model: ModelConfig,
    start: dt.date,
    end: dt.date,
    store: Store,
    *,
    landing_root: str | None = None,
    lake_root: str | None = None,
) -> list[DayResult]:
    """Ingest the outcome files landed for days ``start <= day < end``; one :class:`DayResult` per day.

    A landed file that cannot be read at all raises :class:`evergreen.ingest.read.IngestionError` naming it, before
    anything is written.
    """
    days = _days(start, end)
    t0 = time.perf_counter()
    # Read and validate every day first: an unreadable file must fail the run before any write.
    validations = []
    for day in days:
        files = [read_landed_file(uri) for uri in landed_uris(model, day, landing_root)]
        validations.append(validate_day(model, day, files))
    log.info("%s: read and validated %d day(s) in %.1fs", model.name, len(days), time.perf_counter() - t0)
    _checkpoint("read")
    return [_write_day(model, v, store, lake_root) for v in validations]


def _write_day(model: ModelConfig, validation: DayValidation, store: Store, lake_root: str | None) -> DayResult:
    """Store and lake writes of one validated day, in an order a crash at any point can be retried from."""
    import pandas as pd

    t0 = time.perf_counter()
    day = validation.day
    good = validation.good
    logged_ids = good.loc[~good["has_features"].to_numpy(dtype=bool), "request_id"].tolist()
    chunks = (frame for _, frame in _by_ids(store.read_predictions, model.name, logged_ids))
    labelled, unmatched = join_predictions(model, validation, chunks)
    quarantine = quarantine_frame(validation, unmatched)
    t1 = time.perf_counter()
    outcomes = pd.DataFrame({"request_id": labelled["request_id"], "ts": labelled["outcome_ts"],
                             "label": labelled["label"]})
    written = 0
    for i, (_, existing) in enumerate(_by_ids(store.read_outcomes, model.name, outcomes["request_id"].tolist())):
        to_write = newer_outcomes(outcomes.iloc[i * _READ_CHUNK : (i + 1) * _READ_CHUNK], existing)
        if len(to_write):
            written += store.upsert_outcomes(model.name, to_write)
    if written < len(outcomes):
        log.info("%s %s: %d of %d outcome(s) already in the store with the same or a later outcome time; kept",
                 model.name, day, len(outcomes) - written, len(outcomes))
    t2 = time.perf_counter()
    _checkpoint("store")
    labelled_uri = lake.labelled_path(model.name, day, lake_root)
    quarantine_uri = lake.quarantine_path(model.name, day, lake_root)
    lake.write_parquet_atomic(labelled, labelled_uri, schema=labelled_schema(model))
    _checkpoint("labelled")
    lake.write_parquet_atomic(quarantine, quarantine_uri, schema=quarantine_schema())
    _checkpoint("quarantine")
    result = DayResult(
        model=model.name,
        day=day.isoformat(),
        rows_read=sum(f.rows for f in validation.files),
        landed=len(labelled),
        quarantined=len(quarantine),
        unmatched=len(unmatched),
        reasons=dict(sorted(Counter(quarantine["reason_code"]).items())),
        files=[f.uri for f in validation.files],
        empty_files=[f.uri for f in validation.files if f.empty],
        labelled_uri=labelled_uri,
        quarantine_uri=quarantine_uri,
    )
    store.put_record(Record(RECORD_KIND, f"{model.name}/{day.isoformat()}", model.name,
                            dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc), result.payload()))
    _log_result(result, quarantine)
    log.debug("%s %s: predictions read and joined in %.1fs, outcomes compared and upserted in %.1fs, lake and "
              "record written in %.1fs", model.name, day, t1 - t0, t2 - t1, time.perf_counter() - t2)
    return result


def _log_result(result: DayResult, quarantine: pd.DataFrame) -> None:
    if not result.files:
        log.info("%s %s: no outcome files landed; wrote empty partitions", result.model, result.day)
    log.info("%s", result.summary())
    if result.empty_files:
        log.info("%s %s: empty file(s): %s", result.model, result.day, ", ".join(result.empty_files))
    if len(quarantine):
        # One line per reason code with its first example, so the log says why without listing every row.
        firsts = quarantine.drop_duplicates("reason_code")
        for row in firsts.itertuples(index=False):
            log.warning("%s %s: %d row(s) quarantined as %s, e.g. %s row %d: %s", result.model, result.day,
                        result.reasons[row.reason_code], row.reason_code, row.source_file.rsplit("/", 1)[-1],
                        row.row_number, row.reason)
        log.warning("%s %s: quarantined rows are kept with their reasons in %s", result.model, result.day,
                    result.quarantine_uri)


def run_for_context(model_name: str, context: Any) -> dict[str, Any]:
    """The ``ingest`` task of ``ingest_feedback_<model>``: ingest the run's data interval, return a small summary.

    The store comes from the ``evergreen_store`` Connection (embedded SQLite without one); landing zone and lake
    from ``EVERGREEN_LANDING_URI`` / ``EVERGREEN_LAKE_URI`` (embedded folders without them).
    """
    from evergreen.config import get_config
    from evergreen.hooks.store import StoreHook

    model = get_config().model(model_name)
    start, end = interval_days(context)
    results = ingest_interval(model, start, end, StoreHook().get_conn())
    return {
        "model": model_name,
        "interval": [start.isoformat(), end.isoformat()],
        "backfill": is_backfill(context),
        "days": {
            r.day: {"rows_read": r.rows_read, "landed": r.landed, "quarantined": r.quarantined,
                    "unmatched": r.unmatched, "labelled_uri": r.labelled_uri, "quarantine_uri": r.quarantine_uri}
            for r in results
        },
    }



# --- state digest (tests, demo) -----------------------------------------------------------------------------------


def frame_digest(df: pd.DataFrame) -> dict[str, Any]:
    """Rows and a SHA-256 of a frame's content, independent of row order (columns and dtypes included)."""
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    if len(df):
        lines = df.to_json(orient="records", lines=True, date_format="iso", date_unit="us", double_precision=15,
                           default_handler=str).splitlines()
        for line in sorted(lines):
            h.update(line.encode())
            h.update(b"\n")
    return {"rows": int(len(df)), "sha256": h.hexdigest()}


def state_digest(
    store: Store, model: str, days: Iterable[dt.date], lake_root: str | None = None
) -> dict[str, dict[str, Any]]:
    """A canonical fingerprint of everything ingestion owns: the model's outcomes, predictions and ingestion records
    in the store, and the visible files of each day's labelled and quarantine partitions in the lake."""
    out: dict[str, dict[str, Any]] = {
        "store/outcomes": frame_digest(store.read_outcomes(model)),
        "store/predictions": frame_digest(store.read_predictions(model)),
    }
    recs = [[r.key, r.ts.isoformat(), r.payload] for r in store.list_records(RECORD_KIND, model)]
    out[f"store/records/{RECORD_KIND}"] = {
        "rows": len(recs), "sha256": hashlib.sha256(json.dumps(recs, sort_keys=True, default=str).encode()).hexdigest()
    }
    for day in days:
        for dataset in ("labelled", "quarantine"):
            directory = lake.partition_dir(model, dataset, day, lake_root)
            fs, path = lake.filesystem(directory)
            names = sorted(p for p in (fs.ls(path, detail=False) if fs.exists(path) else [])
                           if not p.rsplit("/", 1)[-1].startswith((".", "_")))
            for name in names:
                with fs.open(name, "rb") as fh:
                    import pyarrow.parquet as pq

                    table = pq.read_table(fh)
                entry = frame_digest(table.to_pandas())
                entry["schema"] = str(table.schema.remove_metadata())
                out[f"lake/{dataset}/dt={lake.day_str(day)}/{name.rsplit('/', 1)[-1]}"] = entry
    return out

