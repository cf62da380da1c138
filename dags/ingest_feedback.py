"""ingest_feedback_<model>: ground truth lands, is validated, and reaches the store and the lake.

Daily and backfillable. A run for the data interval ``[D-1, D)`` reads every outcome file (CSV, plain or ``.gz``,
``.bz2``, ``.zst``, or Parquet) landed under ``<landing>/<model>/dt=D-1/`` (a local folder or any fsspec URI),
validates each row against the model's contract in ``include/config`` (required columns, types, ranges,
categories, nullability, label classes, unique request ids, outcome times within the landing day and not before
the prediction), and then:

* upserts the valid outcomes into the store, keyed by request id;
* writes the day's labelled examples -- the logged prediction's features joined with the outcome, or the file's
  own features when it carries them -- to ``<lake>/<model>/labelled/dt=D-1/part-0.parquet``;
* keeps every bad row with its reason in ``<lake>/<model>/quarantine/dt=D-1/part-0.parquet``;
* keeps a file that cannot be read at all (not UTF-8, corrupt gzip or Parquet) whole, bytes unchanged, under
  ``<lake>/<model>/quarantine/dt=D-1/files/`` while the day's other files land;
* records the counts (rows read, landed, quarantined, unmatched, reasons) and every unreadable, ignored (another
  format, a folder) or skipped (hidden, marker) file as the ``ingestion`` record ``<model>/D-1``, and says how
  many and why in the task log;
* sends one alert naming the unreadable and ignored files, if any.

Only an I/O error fetching a landed file fails the task (with its name, before anything is written; the retries
may heal it). Re-running or backfilling a day leaves the same state.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from evergreen.config import get_config
from evergreen.dag_common import daily, default_args, end_date, start_date


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"ingest_feedback_{model_name}",
        schedule=daily(model.schedules.ingest_feedback),
        start_date=start_date(model),
        end_date=end_date(model),
        catchup=False,
        default_args=default_args(model),
        tags=["evergreen", model_name, "ingestion"],
        doc_md=__doc__,
    )
    def ingest_feedback():
        @task
        def ingest(**context) -> dict:
            from evergreen.ingest.tasks import run_for_context

            return run_for_context(model_name, context)

        ingest()

    return ingest_feedback()


for _name in get_config().models:
    globals()[f"ingest_feedback_{_name}"] = build(_name)
