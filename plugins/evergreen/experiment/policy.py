"""The typed ``ab_test:`` policy of a model block: how champion and challenger share traffic and how the test is
decided (:mod:`evergreen.experiment.analysis`), and the arm names the serving app logs.

Standard library only, so the config loader (imported at DAG parse time) and the serving app can hold one. Built and
validated by the loader's typed builder, so an invalid block fails naming the field, like every other config error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["split", "shadow"]
AbMetric = Literal["model_metric", "outcome_rate"]
Better = Literal["higher", "lower"]

# The arms the serving app writes in the prediction log's ``arm`` column (the contract is spelled out in
# evergreen.experiment.analysis). In shadow mode the challenger's score of a request is logged as its own row with
# arm SHADOW_ARM under the request id shadow_request_id(request_id): the store keys predictions by request id, so
# the shadow row needs its own, and the outcome of the request joins both rows through the champion's id.
CHAMPION_ARM = "champion"
CHALLENGER_ARM = "challenger"
SHADOW_ARM = "shadow"
SHADOW_SUFFIX = "~shadow"
# A request that named a version or a label (TF Serving's /versions/<v>, /labels/<l>) was not routed: it is logged
# with arm PINNED_ARM, so it never counts as A/B traffic of the arm whose model answered it.
PINNED_ARM = "pinned"


def shadow_request_id(request_id: str) -> str:
    """The request id of the shadow row of ``request_id`` (the challenger's score of the same request)."""
    return f"{request_id}{SHADOW_SUFFIX}"


@dataclass(frozen=True)
class AbTestPolicy:
    # split: the challenger answers challenger_share of the entities (deterministic hash of entity id and
    # experiment id); shadow: the challenger scores every request, the champion answers, both are logged.
    mode: Mode = "split"
    challenger_share: float = 0.5
    # What the test compares (split mode). model_metric: the model's metric (ModelConfig.metric) on each arm's
    # matured labels. outcome_rate: the share of each arm's entities with a matured outcome of class outcome_class
    # (default: the label's positive class), e.g. the churn rate among the customers each model served; `better`
    # says which way is good (required: nothing else in the config can tell). In shadow mode the champion answers
    # every request, so the business outcome cannot differ: the test is always the paired model metric.
    metric: AbMetric = "model_metric"
    outcome_class: int | None = None
    better: Better | None = None
    # Decisions: two-sided level of every interval and of the sequential test; the minimum detectable effect (an
    # absolute difference of the metric, in the "better" direction) and the power that give the minimum sample size.
    alpha: float = 0.05
    min_detectable_effect: float = 0.01
    power: float = 0.8
    # Sample-ratio mismatch: a chi-square p-value below this stops the analysis and alerts (GrowthBook's 0.001).
    srm_p_value: float = 0.001
    # The confidence sequence's tuning parameter: the number of analysis units (both arms) at which it is
    # tightest (GrowthBook's "sequential tuning parameter", default 5000). Set it near the expected sample size;
    # it must stay fixed while a test runs, or the always-valid guarantee is lost.
    sequential_tuning: int = 5000
    # No decision on fewer matured units than this in either arm (the normal approximations need some mass).
    min_units_per_arm: int = 100
    # The test stops (retired, inconclusive) after this many matured prediction days without a decision.
    max_days: int = 30
    # The bootstrap interval is a cross-check of the analytic one. A model metric's bootstrap costs draws x rows
    # (about 5 s for ROC AUC on 50,000 rows), so it runs on at most bootstrap_max_units rows; above that the record
    # says it was skipped. An outcome rate's 0/1 units resample as one multinomial draw: it always runs.
    bootstrap_draws: int = 2000
    bootstrap_max_units: int = 50_000
    # When ab_analysis_<model> runs (UTC cron; each run covers the day before, like every daily DAG).
    schedule: str = "0 5 * * *"

    def _check(self, where: str) -> None:
        from evergreen.config import ConfigError

        if not 0 < self.challenger_share < 1:
            raise ConfigError(f"{where}.challenger_share: {self.challenger_share} is not allowed; expected a share "
                              "between 0 and 1 (exclusive), e.g. 0.5")
        if self.metric == "outcome_rate" and self.better is None:
            raise ConfigError(f"{where}.better: required when metric is outcome_rate; say whether a higher or a "
                              "lower rate of the outcome is good (e.g. 'lower' for a churn rate)")
        for name in ("alpha", "power", "srm_p_value"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"{where}.{name}: {value} is not allowed; expected a number between 0 and 1 "
                                  "(exclusive)")
        if not self.min_detectable_effect > 0:
            raise ConfigError(f"{where}.min_detectable_effect: {self.min_detectable_effect} is not allowed; expected "
                              "an absolute difference of the metric > 0, e.g. 0.01")
        for name in ("sequential_tuning", "min_units_per_arm", "max_days", "bootstrap_max_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: {getattr(self, name)} is not allowed; expected a whole number "
                                  ">= 1")
        if self.bootstrap_draws < 2000:
            raise ConfigError(f"{where}.bootstrap_draws: {self.bootstrap_draws} is not allowed; a bootstrap needs at "
                              "least 2000 draws for stable interval ends")
        from croniter import croniter

        if not croniter.is_valid(self.schedule):
            raise ConfigError(f"{where}.schedule: '{self.schedule}' is not a valid cron expression; expected five "
                              "fields 'minute hour day-of-month month day-of-week' (UTC), e.g. '0 5 * * *'")
