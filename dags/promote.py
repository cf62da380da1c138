"""promote_<model>: gate a candidate version and move the registry alias its outcome names.

**When it runs.** On the model's candidate Asset event (``retrain_<model>`` emits it with the new version) and by
hand (Param ``version``; empty: the newest version with status ``candidate``).

**gate** (``evergreen.promote.tasks.gate_run``) loads the candidate and the champion through the platform's skops
loader, scores both on the candidate's out-of-time holdout (its ``evergreen.holdout_uri`` tag), checks load,
signature and latency, and calls the pure gate (``evergreen.promote.gate.decide``) with the model's ``gate:``
policy. The report (every check, its numbers and its verdict) is logged on the candidate's training run as JSON,
Markdown and HTML, summarised in version tags, and recorded in the ledger. A version that already holds the alias
is a no-op that says so.

**apply** moves ``champion`` (outcome ``promote``) or ``challenger`` (``ab_test``) by compare-and-set against the
aliases the gate saw, in the ``evergreen_registry`` pool (one slot: moves of all models are serialized), and
records the move in the ledger. A backfill or a dry run never moves an alias.

**approve** sits between them (``evergreen.operators.approval.GateApprovalOperator``, Airflow's HITL
``ApprovalOperator``). Where the policy's ``approval`` (or ``first_model: approval_required``) asks for a person, it
shows the gate report as its Markdown body under the UI's Required actions and waits up to
``gate.approval_timeout_hours``; Approve runs ``apply``, Reject or no answer skips it, and the answer is in the
ledger. Otherwise it skips itself and ``apply`` runs. Param ``skip_approval`` exists only where the policy sets
``allow_skip_approval: true``.

The ledger: ``python -m evergreen.promote.ledger --model <model>``.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from evergreen.config import get_config
from evergreen.dag_common import candidate_asset, default_args, start_date
from evergreen.operators.approval import GateApprovalOperator

REGISTRY_POOL = "evergreen_registry"


def build(model_name: str):
    model = get_config().model(model_name)

    @dag(
        dag_id=f"promote_{model_name}",
        schedule=candidate_asset(model_name),
        start_date=start_date(model),
        catchup=False,
        max_active_runs=1,
        default_args=default_args(model),
        tags=["evergreen", "promotion", model_name],
        doc_md=__doc__,
        params=params(model),
    )
    def promote():
        @task
        def gate(**context) -> dict:
            from evergreen.promote.tasks import gate_run

            return gate_run(model_name, context)

        approve = GateApprovalOperator(task_id="approve", model_name=model_name,
                                       timeout_hours=model.gate.approval_timeout_hours)

        @task(pool=REGISTRY_POOL, pool_slots=1, trigger_rule="none_failed")
        def apply(decision: dict, **context) -> dict:
            from evergreen.promote.tasks import apply_run

            return apply_run(model_name, decision, context)

        decision = gate()
        decision >> approve >> apply(decision)

    return promote()


def params(model) -> dict:
    out = {
        "version": Param(
            None, type=["null", "string"], title="Version",
            description="The registered version to gate. Empty: the candidate event's version, else the newest "
            "version with status candidate.",
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Gate and log the report on the candidate's run; tag nothing, record nothing, move "
            "nothing.",
        ),
    }
    if model.gate.allow_skip_approval:  # the policy allows it: offered, and what a run sets is in the ledger
        out["skip_approval"] = Param(
            False, type="boolean", title="Skip approval",
            description="Move without the person's approval the gate policy asks for (allowed by "
            "gate.allow_skip_approval); recorded in the ledger with who triggered the run.",
        )
    return out


for _name in get_config().models:
    globals()[f"promote_{_name}"] = build(_name)
