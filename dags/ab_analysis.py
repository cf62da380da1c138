"""ab_analysis_<model>: decide the A/B test between champion and challenger -- promote, stop, or continue.

**When it runs.** Daily (``ab_test.schedule``, UTC) while the model has a ``challenger`` alias; without one,
``has_challenger`` short-circuits and nothing else runs. ``catchup`` is off because every run analyses the whole
test so far (a cumulative look): a missed day loses only that day's record, and the next run sees all its data. A
backfill of a past interval recomputes that day's record and never decides.

**analyze** (``evergreen.experiment.tasks.analyze_run``) reads the test's matured window: the prediction days from
the challenger's ``ab_start`` ledger entry to the last day whose labels have all landed (the ``ingestion`` records
of their landing days say so, as for ``evaluate_performance``), with their outcomes joined by request id. It checks
the sample ratio (chi-square; p < ``ab_test.srm_p_value``, 0.001 by default, stops the analysis and alerts),
estimates the effect on the configured metric with an interval and a bootstrap (in shadow mode, the two models
paired on the same requests), and applies an always-valid sequential test (a confidence sequence, tuned by
``ab_test.sequential_tuning``) with the minimum sample size from ``ab_test.min_detectable_effect`` and ``power``.
Bad input -- an arm without traffic, outcomes without assignments, a metric with zero variance -- is an explained
``cannot_decide``. Every run writes one record (kind ``ab_analysis``, key ``<model>/<day>``) with all its numbers.

**decide** (``evergreen.experiment.tasks.apply_run``), in the ``evergreen_registry`` pool like every alias move:
*promote* moves ``champion`` to the challenger by compare-and-set and removes the ``challenger`` alias; *stop*
removes the ``challenger`` alias by compare-and-set and tags the version ``evergreen.status`` = ``rejected`` (worse)
or ``retired`` (no effect worth detecting, or ``ab_test.max_days`` reached). Both write ledger ``alias_move`` and
``ab_stop`` entries with the numbers. It skips itself for continue / srm / cannot_decide / immature and in a backfill.

The statistics are in ``evergreen.experiment.analysis``; the ledger: ``python -m evergreen.promote.ledger --model
<model>``.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from evergreen.config import get_config
from evergreen.dag_common import daily, default_args, end_date, start_date

REGISTRY_POOL = "evergreen_registry"


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"ab_analysis_{model_name}",
        schedule=daily(model.ab_test.schedule),
        start_date=start_date(model),
        end_date=end_date(model),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(model),
        tags=["evergreen", "experiment", model_name],
        doc_md=__doc__,
    )
    def ab_analysis():
        @task.short_circuit
        def has_challenger() -> bool:
            from evergreen.experiment.tasks import has_challenger

            return has_challenger(model_name)

        @task
        def analyze(**context) -> dict:
            from evergreen.experiment.tasks import analyze_run

            return analyze_run(model_name, context)

        @task(pool=REGISTRY_POOL, pool_slots=1)
        def decide(summary: dict, **context) -> dict:
            from evergreen.experiment.tasks import apply_run

            return apply_run(model_name, summary, context)

        summary = analyze()
        has_challenger() >> summary
        decide(summary)

    return ab_analysis()


for _name in get_config().models:
    globals()[f"ab_analysis_{_name}"] = build(_name)
