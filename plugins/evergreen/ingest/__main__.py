"""``python -m evergreen.ingest``: one ingestion run from the command line, outside Airflow.

The same :func:`evergreen.ingest.tasks.ingest_interval` the DAG task calls, for scripts, benchmarks and the crash
tests (which SIGKILL this process mid-run). Exit status 2 means a landed file's bytes could not be
fetched (an I/O error); the log names it and nothing was written. A file whose content cannot be parsed is kept in
quarantine and the day still lands.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict

from evergreen.ingest.read import IngestionError
from evergreen.ingest.tasks import ingest_interval

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evergreen.ingest --model churn --start 2026-11-02 [--end 2026-11-03] [--store-uri URI]``.

    The same entry point the DAG task calls, for scripts, benchmarks and crash tests. Prints the day results as JSON.
    """
    from evergreen.config import get_config
    from evergreen.paths import embedded_mode, home
    from evergreen.store import open_store

    parser = argparse.ArgumentParser(prog="python -m evergreen.ingest", description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="first day (YYYY-MM-DD)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="day after the last (default: start + 1 day)")
    parser.add_argument("--store-uri", default=None,
                        help="store URI (required outside embedded mode; there the default is the embedded SQLite store)")
    parser.add_argument("--landing-root", default=None)
    parser.add_argument("--lake-root", default=None)
    args = parser.parse_args(argv)
    if not args.store_uri and not embedded_mode():
        # Production refuses to guess: without this, a command pasted from an alert would write to a local file.
        parser.error("--store-uri is required outside embedded mode (EVERGREEN_EMBEDDED=1, set by make demo, make "
                     "airflow and the tests): pass the store's URI, e.g. --store-uri 'postgresql://host/db'")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = get_config().model(args.model)
    end = args.end or args.start + dt.timedelta(days=1)
    with open_store(args.store_uri or home().store_uri) as store:
        try:
            results = ingest_interval(model, args.start, end, store, landing_root=args.landing_root,
                                      lake_root=args.lake_root)
        except IngestionError as exc:
            log.error("%s", exc)
            return 2
    json.dump([asdict(r) for r in results], sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
