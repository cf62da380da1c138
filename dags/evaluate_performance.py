"""evaluate_performance_<model>: is the champion still as good as it was offline?

Daily and backfillable. A run for the data interval ``[D-1, D)`` evaluates the predictions made
``label_delay_days`` earlier. Their labels land on the landing days from the prediction day to ``label_delay_days``
after it, i.e. up to ``D-1``; the window is judged only when ``ingest_feedback`` has recorded every one of those
landing days (its ``ingestion`` records, not the calendar, say the labels are in). Otherwise the run records
``immature`` and names the missing days: ingest them, then re-run the interval (clear the task, or backfill).
A judged run joins the predictions with the outcomes in the store by request id and computes the model's metric
per model version and per A/B arm with a confidence interval (DeLong for ROC AUC), then compares the champion
version with its offline baseline (``holdout_<metric>`` of its training run in MLflow). The result -- ``ok``,
``decay``, or ``immature`` / ``too_small`` / ``cannot_judge`` with the reason -- is recorded (kind ``performance``,
key ``<model>/<day of the predictions>``; a re-run replaces it) and logged to the MLflow experiment
``evergreen/<model>/monitoring`` (one run per model and day).

On a decay larger than the tolerance beyond the interval's noise, ``signal_decay`` emits the model's decay Asset
event (which schedules ``retrain_<model>``) and sends one alert. Backfill runs recompute the record but never
signal: the signal task is skipped.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from evergreen.config import get_config
from evergreen.dag_common import daily, decay_asset, default_args, end_date, start_date


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"evaluate_performance_{model_name}",
        schedule=daily(model.schedules.evaluate_performance),
        start_date=start_date(model),
        end_date=end_date(model),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(model),
        tags=["evergreen", "monitoring", model_name],
        doc_md=__doc__,
    )
    def evaluate_performance():
        @task
        def evaluate(**context) -> dict:
            from evergreen.monitor.tasks import evaluate_performance_run

            return evaluate_performance_run(model_name, context)

        @task(outlets=[decay_asset(model_name)])
        def signal_decay(summary: dict, **context) -> dict:
            from evergreen.monitor.tasks import emit_signal

            return emit_signal(model_name, summary, context)

        signal_decay(evaluate())

    return evaluate_performance()


for _name in get_config().models:
    globals()[f"evaluate_performance_{_name}"] = build(_name)
