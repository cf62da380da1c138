"""The ingestion run: the bodies the ``ingest_feedback_<model>`` DAG calls, the ``ingestion`` record, digests.

What one run does for each day of its data interval (the DAG task calls :func:`run_for_context`, which calls
:func:`ingest_interval`; so do ``python -m evergreen.ingest``, the demo and ``bench/ingest.py``):

1. list every entry under ``lake.landing_dir(model, day)`` and read each CSV (also ``.csv.gz``/``.bz2``/``.zst``)
   and Parquet file (:mod:`evergreen.ingest.read`) -- for *all* days of the interval before anything is written.
   Other entries are listed as ignored, hidden and marker files as skipped; a file whose bytes cannot be parsed
   is *unreadable*: its bytes are kept whole in quarantine and the day's other files still land. Only an I/O
   failure fetching a file fails the run (with its name, before any write; a retry may heal it);
2. validate each row against the model's contract (:mod:`evergreen.ingest.contract`), vectorised per column;
   a file-level problem (missing, partial or extra columns) sends every row of that file to quarantine;
3. look up the logged predictions of the outcome-only rows (:mod:`evergreen.ingest.join`): an outcome with no
   logged prediction is quarantined as ``unmatched`` (its features are unknown, so it could never become a
   labelled example), one earlier than its prediction as ``before_prediction``;
4. upsert the valid outcomes into the store, write the day's labelled examples and quarantine as Parquet
   partitions (always both, possibly empty, with a fixed schema) plus the unreadable files' bytes under
   ``quarantine/dt=<day>/files/``, and upsert the day's ``ingestion`` record, which lists every file read,
   empty, unreadable, ignored or skipped.

The DAG task then sends one alert per day with unreadable or ignored files (:func:`landing_alert`), in a
backfill too: those files' rows reached no store, which is a fact to act on whatever run found it, and the
notifier sends the same alert only once.

Every output is a function of the landed files and the logged predictions, so re-running a day, retrying after a
crash at any point, or backfilling over days already run leaves the same state. When one request id lands more
than once, one rule decides which outcome wins (:mod:`evergreen.corrections`: the latest outcome time, then the
later landing -- day, file name, row; never the label): within a day validation keeps the winner and quarantines the
others (``superseded``, or ``duplicate_request_id`` for an identical repeat); across days each day's partition
keeps what landed that day, with its landing key, and the store's conditional upsert keeps the winner atomically,
so the result never depends on the order runs happen in, nor on two runs interleaving.
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
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.context import interval_days, is_backfill
from evergreen.corrections import LANDING_KEY
from evergreen.ingest.contract import check_prediction_times, labelled_schema, quarantine_schema, validate_day
from evergreen.ingest.join import join_predictions, quarantine_frame
from evergreen.ingest.read import read_landed_file, scan_landing
from evergreen.store.base import Record

if TYPE_CHECKING:
    import pandas as pd

    from evergreen.config import ModelConfig
    from evergreen.ingest.contract import DayValidation
    from evergreen.ingest.read import Landing
    from evergreen.notifiers.alert import Alert
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

RECORD_KIND = "ingestion"

# Store reads by request id and outcome writes are chunked so the rows the driver materialises stay bounded at any N.
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
    # {"file", "reason", "kept_at", "bytes", "sha256"}: not parsable, its bytes kept in quarantine
    files_unreadable: list[dict[str, Any]] = field(default_factory=list)
    # {"file", "reason"}: another format or a folder (alerted); hidden or marker files (not alerted)
    files_ignored: list[dict[str, Any]] = field(default_factory=list)
    files_skipped: list[dict[str, Any]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")
        out.pop("day")
        return out

    def summary(self) -> str:
        why = ", ".join(f"{code}={n}" for code, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        return (
            f"{self.model} {self.day}: {len(self.files)} file(s) ({len(self.empty_files)} empty, "
            f"{len(self.files_unreadable)} unreadable), {len(self.files_ignored)} ignored, "
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

    A file whose bytes cannot be parsed is kept in quarantine and listed; only a landed file whose bytes cannot be
    fetched raises :class:`evergreen.ingest.read.IngestionError` naming it, before anything is written.
    """
    days = _days(start, end)
    t0 = time.perf_counter()
    # Read and validate every day first: a file that cannot be fetched must fail the run before any write.
    work = []
    for day in days:
        landing = scan_landing(model, day, landing_root)
        files = [read_landed_file(uri) for uri in landing.uris]
        for lf in files:
            if lf.unreadable:
                lf.kept_at = kept_file_uri(model.name, day, lf.name, lake_root)
        work.append((landing, validate_day(model, day, files)))
    log.info("%s: read and validated %d day(s) in %.1fs", model.name, len(days), time.perf_counter() - t0)
    _checkpoint("read")
    return [_write_day(model, landing, v, store, lake_root) for landing, v in work]


def kept_files_dir(model: str, day: dt.date | str, lake_root: str | None = None) -> str:
    """Where the bytes of a day's unreadable files are kept: ``<lake>/<model>/quarantine/dt=<day>/files``."""
    return f"{lake.partition_dir(model, 'quarantine', day, lake_root)}/files"


def kept_file_uri(model: str, day: dt.date | str, name: str, lake_root: str | None = None) -> str:
    return f"{kept_files_dir(model, day, lake_root)}/{name}"


def _keep_unreadable(model: ModelConfig, validation: DayValidation, lake_root: str | None) -> None:
    """Write the bytes of the day's unreadable files under :func:`kept_files_dir` (atomically, unchanged) and remove
    copies of files that are no longer unreadable, so the folder holds exactly what the quarantine rows name."""
    kept = {lf.kept_at: lf.data for lf in validation.files if lf.unreadable and lf.kept_at}
    for uri, data in sorted(kept.items()):
        lake.write_atomic(uri, lambda fh, data=data: fh.write(data))
    directory = kept_files_dir(model.name, validation.day, lake_root)
    entries = lake.list_dir(directory)
    if not entries:
        return
    fs, path = lake.filesystem(directory)
    names = {u.rsplit("/", 1)[-1] for u in kept}
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "directory" and not name.startswith(".") and name not in names:
            log.info("%s %s: removing the kept copy of %s: the file is no longer unreadable", model.name,
                     validation.day, name)
            fs.rm(entry["name"])
    if not kept and not lake.list_dir(directory):
        fs.rm(path, recursive=True)


def _write_day(
    model: ModelConfig, landing: Landing, validation: DayValidation, store: Store, lake_root: str | None
) -> DayResult:
    """Store and lake writes of one validated day, in an order a crash at any point can be retried from."""
    import pandas as pd

    t0 = time.perf_counter()
    day = validation.day
    good = validation.good
    logged_ids = good.loc[~good["has_features"].to_numpy(dtype=bool), "request_id"].tolist()
    chunks = (frame for _, frame in _by_ids(store.read_predictions, model.name, logged_ids))
    labelled, unmatched = join_predictions(model, validation, chunks)
    labelled, early = check_prediction_times(validation, labelled)
    later = pd.concat([unmatched, early], ignore_index=True) if len(early) else unmatched
    quarantine = quarantine_frame(validation, later)
    t1 = time.perf_counter()
    outcomes = pd.DataFrame({"request_id": labelled["request_id"], "ts": labelled["outcome_ts"],
                             "label": labelled["label"], LANDING_KEY: labelled[LANDING_KEY]})
    # The store applies the correction rule itself, atomically (no read here to compare with: another run may
    # write between a read and a write). Chunks keep the rows a backend materialises bounded at any day size.
    written = 0
    for i in range(0, len(outcomes), _READ_CHUNK):
        written += store.upsert_outcomes(model.name, outcomes.iloc[i : i + _READ_CHUNK])
    if written < len(outcomes):
        log.info("%s %s: %d of %d outcome(s) lost to a later one already in the store (a later outcome time, or "
                 "the same time landed later); the store kept those", model.name, day, len(outcomes) - written,
                 len(outcomes))
    t2 = time.perf_counter()
    _checkpoint("store")
    labelled_uri = lake.labelled_path(model.name, day, lake_root)
    quarantine_uri = lake.quarantine_path(model.name, day, lake_root)
    lake.write_parquet_atomic(labelled, labelled_uri, schema=labelled_schema(model))
    _checkpoint("labelled")
    _keep_unreadable(model, validation, lake_root)  # before the quarantine rows that name the copies
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
        files_unreadable=[{"file": f.uri, "reason": f.error, "kept_at": f.kept_at, "bytes": f.size,
                           "sha256": f.sha256} for f in validation.files if f.unreadable],
        files_ignored=[n.to_dict() for n in landing.ignored],
        files_skipped=[n.to_dict() for n in landing.skipped],
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
    for f in result.files_unreadable:
        log.warning("%s %s: unreadable file %s (%s); its bytes are kept at %s", result.model, result.day,
                    f["file"], f["reason"], f["kept_at"])
    for f in result.files_ignored:
        log.warning("%s %s: ignored %s: %s", result.model, result.day, f["file"], f["reason"])
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
    from evergreen.notifiers.alert import deliver

    model = get_config().model(model_name)
    start, end = interval_days(context)
    store = StoreHook().get_conn()
    results = ingest_interval(model, start, end, store)
    alerts = {}
    for r in results:
        alert = landing_alert(r, context)
        if alert is not None:  # a backfill alerts too: see the module docstring
            alerts[r.day] = {dest: d["status"] for dest, d in deliver(alert, context, store=store).items()}
    return {
        "model": model_name,
        "interval": [start.isoformat(), end.isoformat()],
        "backfill": is_backfill(context),
        "days": {
            r.day: {"rows_read": r.rows_read, "landed": r.landed, "quarantined": r.quarantined,
                    "unmatched": r.unmatched, "labelled_uri": r.labelled_uri, "quarantine_uri": r.quarantine_uri}
            for r in results
        },
        "alerts": alerts,
    }


def landing_alert(result: DayResult, context: Any = None, platform: Any = None) -> Alert | None:
    """The alert for a day with unreadable or ignored files (None when there are none): which files and why.

    Its content depends only on the day's facts (no run id), so a re-run, a retry or a backfill that finds the
    same files is the same alert, which the notifier does not send twice. File names and parser messages are the
    producer's text: they go in as data (the notifiers render no templates) and only as quoted shell words.
    """
    from evergreen.context import airflow_info
    from evergreen.links import airflow_run_url
    from evergreen.notifiers.alert import Alert, shell_command

    bad = [("unreadable", f) for f in result.files_unreadable] + [("ignored", f) for f in result.files_ignored]
    if not bad:
        return None
    if platform is None:
        from evergreen.config import get_config

        platform = get_config().platform

    def name(f: dict[str, Any]) -> str:
        return f["file"].rstrip("/").rsplit("/", 1)[-1]

    def line(kind: str, f: dict[str, Any]) -> str:
        kept = f" (bytes kept at {f['kept_at']})" if f.get("kept_at") else ""
        return f"{kind} {name(f)}: {f['reason']}{kept}"

    landing = bad[0][1]["file"].rstrip("/").rsplit("/", 1)[0]
    summary = (
        f"{len(bad)} file(s) landed for {result.model} on {result.day} did not reach the store "
        f"({len(result.files_unreadable)} unreadable, {len(result.files_ignored)} ignored); the day's other files "
        f"landed ({result.landed} rows). " + " | ".join(line(kind, f) for kind, f in bad)
    )
    source = airflow_info(context or {})
    dag_id = source["dag_id"] or f"ingest_feedback_{result.model}"
    day = dt.date.fromisoformat(result.day)
    logical = (context or {}).get("logical_date")
    stamp = logical.isoformat() if logical is not None else None
    argv = (["airflow", "tasks", "clear", dag_id, "--task-regex", "^ingest$", "--start-date", stamp, "--end-date",
             stamp, "--yes"] if stamp else
            ["python", "-m", "evergreen.ingest", "--model", result.model, "--start", day.isoformat()])
    return Alert(
        model=result.model,
        signal="landing",
        day=result.day,
        title=f"{result.model}: {len(bad)} landed file(s) of {result.day} not ingested",
        summary=summary[:4000],
        window={"start": result.day, "end": (day + dt.timedelta(days=1)).isoformat()},
        numbers={"unreadable": [name(f) for f in result.files_unreadable],
                 "ignored": [name(f) for f in result.files_ignored],
                 "landing": landing, "record": f"{RECORD_KIND}:{result.model}/{result.day}"},
        links={"airflow_run": airflow_run_url(platform.airflow_base_url, dag_id, source["run_id"])
               if source["run_id"] else None},
        rerun={"dag_id": dag_id, "argv": argv, "command": shell_command(argv),
               "note": "replace or remove the files in the landing folder (fix or re-export an unreadable one, "
                       "convert an ignored one to CSV or Parquet), then re-run the day"},
        source=source,
    )



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
            fs, _ = lake.filesystem(directory)
            names = [e["name"] for e in lake.list_dir(directory)
                     if e.get("type") != "directory" and not e["name"].rsplit("/", 1)[-1].startswith((".", "_"))]
            for name in names:
                with fs.open(name, "rb") as fh:
                    import pyarrow.parquet as pq

                    table = pq.read_table(fh)
                entry = frame_digest(table.to_pandas())
                entry["schema"] = str(table.schema.remove_metadata())
                out[f"lake/{dataset}/dt={lake.day_str(day)}/{name.rsplit('/', 1)[-1]}"] = entry
        # the kept bytes of unreadable files (a key of its own: the entries above are all Parquet partitions)
        kept_dir = kept_files_dir(model, day, lake_root)
        fs, _ = lake.filesystem(kept_dir)
        for name in [e["name"] for e in lake.list_dir(kept_dir) if e.get("type") != "directory"]:
            if not name.rsplit("/", 1)[-1].startswith("."):
                with fs.open(name, "rb") as fh:
                    data = fh.read()
                out[f"lake/quarantine-files/dt={lake.day_str(day)}/{name.rsplit('/', 1)[-1]}"] = {
                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return out

