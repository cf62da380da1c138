"""monitor_drift_<model>: has the traffic moved away from what the champion was trained on?

Daily and backfillable. A run for the data interval ``[D-1, D)`` compares the features logged with the interval's
predictions against the champion version's reference statistics (built by the training pipeline's register step from
the exact rows the version trained on, tagged ``evergreen.reference_uri``, checked against the version's data
fingerprint when loaded). Per feature: the drift score, the method, the
threshold and the verdict; for the window: the share of drifted features against ``drift.drift_share``. The result
is recorded (kind ``drift``, key ``<model>/<day>``; a re-run replaces it) and logged to the MLflow experiment
``evergreen/<model>/monitoring`` with the per-feature scores as metrics and an Evidently HTML report computed on a
bounded, deterministic sample (the report says its sample size).

No champion yet, an empty window, features missing or of the wrong type: recorded as ``cannot_judge`` with the
reason. When the policy says drift, ``signal_drift`` emits the model's drift Asset event (which schedules
``retrain_<model>``) and sends one alert. Backfill runs recompute the record but never signal.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from evergreen.config import get_config
from evergreen.dag_common import daily, default_args, drift_asset, end_date, start_date


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"monitor_drift_{model_name}",
        schedule=daily(model.schedules.monitor_drift),
        start_date=start_date(model),
        end_date=end_date(model),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(model),
        tags=["evergreen", "monitoring", model_name],
        doc_md=__doc__,
    )
    def monitor_drift():
        @task
        def detect(**context) -> dict:
            from evergreen.monitor.tasks import monitor_drift_run

            return monitor_drift_run(model_name, context)

        @task(outlets=[drift_asset(model_name)])
        def signal_drift(summary: dict, **context) -> dict:
            from evergreen.monitor.tasks import emit_signal

            return emit_signal(model_name, summary, context)

        signal_drift(detect())

    return monitor_drift()


for _name in get_config().models:
    globals()[f"monitor_drift_{_name}"] = build(_name)
