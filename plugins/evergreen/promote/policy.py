"""The typed ``gate:`` policy of a model block (what :func:`evergreen.promote.gate.decide` applies).

Standard library only, so the config loader (imported at DAG parse time) can hold a :class:`GatePolicy` without
pulling numpy in. :meth:`GatePolicy.from_dict` builds and validates one with the loader's own typed builder, so an
invalid block fails like every other config error, naming the field::

    include/config/churn.yaml: models.churn.gate.mode: 'better' is not allowed; expected one of
    non_inferiority, superiority

The meaning of each field and the decision table are in :mod:`evergreen.promote.gate`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["non_inferiority", "superiority"]
AbTestWhen = Literal["never", "not_superior", "always"]
FirstModel = Literal["floors_only", "approval_required"]
Approval = Literal["never", "always", "on_promote", "on_ab_test"]
FloorOn = Literal["value", "bound"]


@dataclass(frozen=True)
class GatePolicy:
    # Absolute floors per metric on the candidate's holdout (a ceiling for log_loss, where lower is better), judged
    # on the point estimate ("value") or on the pessimistic end of its interval ("bound").
    floors: dict[str, float] = field(default_factory=dict)
    floor_on: FloorOn = "value"
    # Challenger vs champion on the same holdout rows, by the paired interval of the gain (challenger - champion,
    # sign-flipped for lower-is-better metrics): non-inferior when its low end is above -margin, superior when it is
    # above superiority_margin. `mode` is the bar a candidate must clear to pass at all.
    mode: Mode = "non_inferiority"
    margin: float = 0.01
    superiority_margin: float = 0.0
    # How a candidate that passes reaches champion: directly (never), through an A/B test when it is not superior
    # (not_superior), or always through an A/B test.
    ab_test_when: AbTestWhen = "not_superior"
    min_holdout_rows: int = 500
    # Features whose slices may not regress by more than slice_tolerance (point estimates, challenger vs
    # champion on the same rows); slices with fewer than slice_min_rows rows are skipped, and the report says so.
    slices: tuple[str, ...] = ()
    slice_tolerance: float = 0.02
    slice_min_rows: int = 200
    # The infrastructure check scores latency_sample_rows rows through the platform's loader within this budget.
    latency_budget_ms: float = 500.0
    latency_sample_rows: int = 100
    # With no champion there is nothing to compare: promote on the floors alone, or only with a person's approval.
    first_model: FirstModel = "floors_only"
    # Which outcomes wait for a person (Airflow's HITL approval) before the alias moves.
    approval: Approval = "never"
    # How long an approval waits for a person; with no answer by then the request resolves to Reject.
    approval_timeout_hours: float = 24.0
    # Whether promote_<model> offers the Param skip_approval (a run that moves without the person the policy asks
    # for). Off by default: the Param does not exist, and a run conf that sets it is refused.
    allow_skip_approval: bool = False
    confidence: float = 0.95

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "gate") -> GatePolicy:
        """A validated policy from a model block's ``gate:`` mapping; ConfigError naming ``where.<field>``."""
        from evergreen.config import _build  # the loader's builder: one coercion rule for every config block

        return _build(cls, {} if data is None else data, where)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slices"] = list(self.slices)
        return out

    def _check(self, where: str) -> None:
        import typing

        from evergreen.config import ConfigError, Metric

        metrics = typing.get_args(Metric)
        for name in self.floors:
            if name not in metrics:
                raise ConfigError(f"{where}.floors.{name}: unknown metric; expected one of {', '.join(metrics)}")
        for name in ("margin", "superiority_margin", "slice_tolerance"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: {getattr(self, name)} is not allowed; expected a number >= 0 "
                                  "(a difference in the metric's own units)")
        for name in ("min_holdout_rows", "slice_min_rows", "latency_sample_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: {getattr(self, name)} is not allowed; expected a whole number >= 1")
        if not self.latency_budget_ms > 0:
            raise ConfigError(f"{where}.latency_budget_ms: {self.latency_budget_ms} is not allowed; expected "
                              "milliseconds > 0")
        if not self.approval_timeout_hours > 0:
            raise ConfigError(f"{where}.approval_timeout_hours: {self.approval_timeout_hours} is not allowed; "
                              "expected hours > 0 (an unanswered approval is rejected when they have passed)")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"{where}.confidence: {self.confidence} is not allowed; expected a number between 0 "
                              "and 1 (exclusive), e.g. 0.95")
        if len(set(self.slices)) != len(self.slices):
            raise ConfigError(f"{where}.slices: {list(self.slices)} names a feature twice")
