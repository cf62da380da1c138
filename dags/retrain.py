"""retrain_<model>: train a new candidate through the Kubeflow training pipeline when the retrain policy says so.

**When it runs.** On the model's drift or decay Asset event (``monitor_drift`` / ``evaluate_performance``), on a
daily check (``schedules.retrain``, default 04:00 UTC) that retrains a champion older than
``retrain.max_model_age_days`` -- or bootstraps the first model when none is registered -- and by hand. One DAG with
an ``AssetOrTimeSchedule`` keeps the three paths on the same policy, record and pipeline.

**decide** applies the retrain policy (``evergreen.train.policy``): backfill runs and backfill-originated events
never retrain; a running A/B test (a ``challenger`` alias) blocks; then ``retrain.cooldown_hours`` since the last
retrain and ``retrain.min_new_rows`` labelled rows newer than the last trained window (``force`` skips these two).
Every decision, yes or no, is recorded in the store (kind ``retrain_decision``, key ``<model>/<run_id>``) with its
reason; a no (or a dry run) skips the rest of the run.

**train** runs the training pipeline (``include/pipelines/training.py``: prepare -> train -> evaluate -> register)
through ``KubeflowPipelineOperator``: locally through ``kfp.local`` in its own process when the
``kubeflow_default`` Connection has no host, on the Kubeflow cluster otherwise (re-attaching to its run after a
retry or a worker restart). The window is ``[window_end - window_days, window_end)`` in lake days, ``window_end``
defaulting to the run's date. A window without data fails here with the pipeline's message; nothing is registered.

**Params are bounded.** Airflow checks their schemas when a run is triggered (types, dates as ``YYYY-MM-DD``,
``window_days`` from 1 to 3650, hyper-parameters as flat JSON values); ``decide`` then checks what a schema cannot
(the window's order and length, and every hyper-parameter against the estimator: a name it does not know or a value
it rejects fails ``decide``, naming the parameter, before any pipeline starts).

**register_candidate** emits the model's candidate Asset event (``promote`` listens) with the new version, unless
the holdout metric missed the sanity floor and nothing was registered.

Manual runs: *Trigger DAG w/ config* shows the Params below (force, training window, hyper-parameters, dry run).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from evergreen.config import HYPERPARAMETERS_SCHEMA, MAX_TRAINING_WINDOW_DAYS, get_config
from evergreen.dag_common import candidate_asset, decay_asset, default_args, drift_asset, end_date, start_date
from evergreen.operators.kubeflow import KubeflowPipelineOperator
from evergreen.train.register import training_experiment


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"retrain_{model_name}",
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(model.schedules.retrain, timezone="UTC"),
            assets=drift_asset(model_name) | decay_asset(model_name),
        ),
        start_date=start_date(model),
        end_date=end_date(model),  # ends the daily check only: Asset events still start runs
        catchup=False,
        max_active_runs=1,  # two trainings of one model at once would race on the cooldown and the registry
        default_args=default_args(model),
        tags=["evergreen", "retraining", model_name],
        doc_md=__doc__,
        params={
            "force": Param(
                False, type="boolean", title="Force",
                description="Retrain even inside retrain.cooldown_hours or with fewer new labelled rows than "
                "retrain.min_new_rows. Never overrides a backfill or a running A/B test.",
            ),
            "window_start": Param(
                None, type=["null", "string"], format="date", title="Training window start",
                description="First lake day of the training window (UTC, inclusive). Empty: window end minus "
                "window days.",
            ),
            "window_end": Param(
                None, type=["null", "string"], format="date", title="Training window end",
                description="Day after the last lake day of the window (UTC, exclusive). Empty: the run's date.",
            ),
            "window_days": Param(
                model.retrain.training_window_days, type="integer", minimum=1, maximum=MAX_TRAINING_WINDOW_DAYS,
                title="Training window days",
                description="Length of the window when no start is given (retrain.training_window_days), "
                f"1 to {MAX_TRAINING_WINDOW_DAYS} days.",
            ),
            "hyperparameters": Param(
                {}, **HYPERPARAMETERS_SCHEMA, title="Hyper-parameter overrides",
                description=f"JSON object over training.hyperparameters of {model.training.estimator}, "
                'e.g. {"max_depth": 6}: parameter names, each a string, number, boolean, null or a list of those. '
                "A name or value the estimator rejects fails the decide task, naming it.",
            ),
            "dry_run": Param(
                False, type="boolean", title="Dry run",
                description="Decide and record the decision, train nothing.",
            ),
        },
    )
    def retrain():
        # multiple_outputs: train reads the plan's "arguments" as its own XCom
        @task.short_circuit(multiple_outputs=True)
        def decide(**context) -> dict | None:
            from evergreen.train.tasks import decide_run

            return decide_run(model_name, context)

        plan = decide()

        train = KubeflowPipelineOperator(
            task_id="train",
            pipeline_compiler="evergreen.train.steps:compile_training_pipeline",
            arguments=plan["arguments"],
            experiment_name=f"evergreen-{model_name}",
            mlflow_experiment=training_experiment(model_name),
            execution_timeout=dt.timedelta(hours=6),
        )

        @task(outlets=[candidate_asset(model_name)])
        def register_candidate(plan: dict, result: dict, **context) -> dict:
            from evergreen.train.tasks import candidate_run

            return candidate_run(model_name, plan, result, context)

        register_candidate(plan, train.output)

    return retrain()


for _name in get_config().models:
    globals()[f"retrain_{_name}"] = build(_name)
