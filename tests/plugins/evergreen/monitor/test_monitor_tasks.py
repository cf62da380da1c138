"""The monitoring task bodies' own rules, without Airflow or MLflow: what a record keeps of the task instance, why
a champion without a usable training-window tag cannot be judged, and the report's deterministic sample."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from evergreen.config import get_config
from evergreen.monitor.report import report_sample
from evergreen.monitor.tasks import CannotJudge, _airflow_record, champion_reference
from evergreen.tracking import TRAINING_WINDOW_TAG


def test_records_keep_the_same_airflow_facts():
    ti = SimpleNamespace(dag_id="monitor_drift_churn", run_id="scheduled__2027-04-11", task_id="detect",
                         map_index=-1, try_number=2)
    run = SimpleNamespace(run_type=SimpleNamespace(value="scheduled"))
    assert _airflow_record({"ti": ti, "dag_run": run}) == {
        "dag_id": "monitor_drift_churn", "run_id": "scheduled__2027-04-11", "task_id": "detect", "try_number": 2,
        "run_type": "scheduled",
    }


@pytest.mark.parametrize(("tags", "says"), [({}, "has no tag"), ({TRAINING_WINDOW_TAG: "last week"}, "is not")])
def test_a_champion_without_a_usable_training_window_cannot_be_judged(tags, says):
    version = SimpleNamespace(version="9001", tags=tags)
    with pytest.raises(CannotJudge, match="version 9001") as caught:
        champion_reference(get_config().model("churn"), version, store=None)
    assert TRAINING_WINDOW_TAG in str(caught.value) and says in str(caught.value)


def test_report_sample_is_bounded_and_deterministic():
    frame = pd.DataFrame({"x": range(100)})
    a, b = report_sample(frame, 10, "churn/2027-04-12"), report_sample(frame, 10, "churn/2027-04-12")
    assert len(a) == 10 and a.equals(b) and a["x"].is_monotonic_increasing
    assert not a.equals(report_sample(frame, 10, "churn/2027-04-13"))
    assert report_sample(frame, 500, "any").equals(frame)
