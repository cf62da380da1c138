"""The person's answer to a gate outcome that asks for one: Airflow's HITL ``ApprovalOperator``, fed by the gate.

:class:`GateApprovalOperator` sits between ``gate`` and ``apply`` in ``promote_<model>``. It reads the gate's
decision (XCom of the upstream task) when it runs and:

* **skips itself** when there is nothing to approve: the outcome is ``reject`` or a no-op, the run is a dry run or a
  backfill (neither moves an alias), the policy asks for no approval, or the policy allows ``skip_approval`` and the
  run set it (recorded in the ledger as a skipped approval, with who triggered the run). ``apply`` runs after a
  skipped approval (trigger rule ``none_failed``) and checks the same facts itself;
* otherwise **asks**: the subject names the model, the outcome and the versions; the body is the gate report's
  Markdown (every check, its numbers and its verdict). The Airflow UI lists it under Required actions, and the REST
  API answers it with ``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/approve/-1/hitlDetails``;
* on the answer, **records** a ledger ``approval`` entry (approved, rejected, or rejected because nobody answered
  within the policy's ``approval_timeout_hours``: the default option is Reject), then lets ``ApprovalOperator`` do
  the rest: Approve runs ``apply``, Reject skips it, so nothing moves.

**No template.** The report carries text nobody vetted (exception messages, version names), and the subject and
body are template fields of ``HITLOperator``. They are set here at run time from the XCom and this class has no
template fields, so a ``{{ ... }}`` in a report reaches the reviewer as text and is never rendered.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

log = logging.getLogger(__name__)

SKIP_APPROVAL = "skip_approval"


class GateApprovalOperator(ApprovalOperator):
    """A person approves or rejects the gate outcome of ``gate_task_id`` before ``apply`` moves an alias."""

    template_fields = ()  # the subject and body are set from data at run time, never rendered (see module doc)
    ui_color = "#f6e3a1"

    def __init__(self, *, model_name: str, gate_task_id: str = "gate", timeout_hours: float = 24.0,
                 **kwargs: Any) -> None:
        super().__init__(
            subject=f"{model_name}: approve the gate outcome?", body=None, defaults=ApprovalOperator.REJECT,
            response_timeout=dt.timedelta(hours=timeout_hours), **kwargs,
        )
        self.model_name = model_name
        self.gate_task_id = gate_task_id
        self.timeout_hours = timeout_hours

    def _decision(self, context: Any) -> dict[str, Any]:
        decision = context["ti"].xcom_pull(task_ids=self.gate_task_id)
        if not isinstance(decision, dict):
            raise RuntimeError(f"task '{self.gate_task_id}' left no decision in XCom; re-run the DAG from the gate")
        return decision

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowSkipException

        from evergreen.promote.tasks import approval_skip_reason, record_approval

        decision = self._decision(context)
        reason, skipped_by_param = approval_skip_reason(self.model_name, decision, context)
        if reason:
            if skipped_by_param:
                record_approval(self.model_name, decision, context, answer="skipped", user=None, reason=reason)
            log.info("no approval asked: %s", reason)
            raise AirflowSkipException(reason)
        self.subject = (f"{self.model_name}: {decision['outcome']} version {decision['version']} "
                        f"(champion now {decision.get('expected_champion') or 'none'})?")
        self.body = (decision.get("markdown") or decision.get("summary") or "") + (
            f"\n\n---\nApprove moves alias `{decision.get('alias')}` to version {decision['version']}. Reject, or no "
            f"answer within {self.timeout_hours:g} h, moves nothing.")
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from evergreen.promote.tasks import record_approval

        if "error" not in event:
            chosen = list(event.get("chosen_options") or [])
            self.validate_chosen_options(chosen)
            user = event.get("responded_by_user") or None
            who = (user.get("name") or user.get("id")) if isinstance(user, dict) else (str(user) if user else None)
            decision = self._decision(context)
            if chosen == [self.APPROVE]:
                answer, reason = "approved", f"approved by {who}"
            elif event.get("timedout") or who is None:
                answer = "timed_out"
                reason = f"no answer within {self.timeout_hours:g} h: rejected by default, nothing moved"
            else:
                answer, reason = "rejected", f"rejected by {who}, nothing moved"
            record_approval(self.model_name, decision, context, answer=answer, user=who, reason=reason)
        return super().execute_complete(context, event)
