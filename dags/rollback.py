"""rollback_<model>: move ``champion`` back to the version that held it before, by hand.

The target is the ledger's previous champion (``evergreen.promote.ledger.previous_champion``), or Param
``version``, which must have been champion before according to the ledger: any other version is refused, naming
it. The move is a compare-and-set against the current champion in the ``evergreen_registry`` pool, recorded in the
ledger as a ``rollback`` and alerted through the platform's destinations. A retry of a recorded rollback is a
no-op. Never scheduled, never in a backfill.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from evergreen.config import get_config
from evergreen.dag_common import default_args, start_date

REGISTRY_POOL = "evergreen_registry"


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"rollback_{model_name}",
        schedule=None,
        start_date=start_date(model),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(model),
        tags=["evergreen", "promotion", model_name],
        doc_md=__doc__,
        params={
            "version": Param(
                None, type=["null", "string"], title="Version",
                description="The former champion to return to. Empty: the champion before the current one, per "
                "the ledger.",
            ),
        },
    )
    def rollback():
        @task(pool=REGISTRY_POOL, pool_slots=1)
        def rollback_champion(**context) -> dict:
            from evergreen.promote.tasks import rollback_run

            return rollback_run(model_name, context)

        rollback_champion()

    return rollback()


for _name in get_config().models:
    globals()[f"rollback_{_name}"] = build(_name)
