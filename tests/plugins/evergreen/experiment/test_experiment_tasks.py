"""The pieces of evergreen.experiment.tasks that need no Airflow run: which prediction days of a test have all their
labels (from ingestion records), and the registry's compare-and-set delete of an alias on a real SQLite-backed
MLflow registry."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from evergreen.config import get_config
from evergreen.experiment.tasks import matured_end

D = dt.date(2026, 12, 1)


def model(delay: int):
    m = get_config().model("churn")
    return dataclasses.replace(m, performance=dataclasses.replace(m.performance, label_delay_days=delay))


def days(first: dt.date, n: int) -> dict:
    return {first + dt.timedelta(days=i): {"rows_read": 1} for i in range(n)}


def test_matured_end_is_the_last_day_whose_landing_days_are_all_ingested():
    m = model(3)
    # prediction day D needs landing days D..D+3; day D+k adds D+k+3
    assert matured_end(m, D, D + dt.timedelta(days=10), days(D, 3)) == D  # D+3 missing: nothing matured
    assert matured_end(m, D, D + dt.timedelta(days=10), days(D, 4)) == D + dt.timedelta(days=1)
    assert matured_end(m, D, D + dt.timedelta(days=10), days(D, 9)) == D + dt.timedelta(days=6)
    # never past the run's limit (interval end less the delay)
    assert matured_end(m, D, D + dt.timedelta(days=2), days(D, 20)) == D + dt.timedelta(days=2)
    # a gap ends the run of matured days there, whatever lands after it
    gap = days(D, 20)
    del gap[D + dt.timedelta(days=6)]
    assert matured_end(m, D, D + dt.timedelta(days=10), gap) == D + dt.timedelta(days=3)
    # a record that says the day failed counts as missing
    failed = {**days(D, 20), D + dt.timedelta(days=5): {"status": "failed"}}
    assert matured_end(m, D, D + dt.timedelta(days=10), failed) == D + dt.timedelta(days=2)


@pytest.fixture
def registry(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", tmp_path.as_uri(), tags={"evergreen.status": "candidate"})
    client.set_registered_model_alias("m", "challenger", "2")
    return client


def test_clear_alias_is_a_compare_and_set_delete(registry):
    from evergreen.promote.registry import AliasConflict, clear_alias
    from evergreen.tracking import aliases

    with pytest.raises(AliasConflict, match="points to version 2, not version 1"):
        clear_alias(registry, "m", "challenger", "1", status="rejected")
    assert aliases(registry, "m") == {"challenger": "2"}
    move = clear_alias(registry, "m", "challenger", "2", status="rejected")
    assert (move.previous, move.new, move.changed) == ("2", None, True)
    assert aliases(registry, "m") == {}
    assert registry.get_model_version("m", "2").tags["evergreen.status"] == "rejected"
    # a retry of a delete that landed is a no-op that says so
    assert clear_alias(registry, "m", "challenger", "2", status="rejected").changed is False
    with pytest.raises(ValueError, match="needs the version"):
        clear_alias(registry, "m", "challenger", None)


def test_clear_alias_without_status_leaves_the_tag(registry):
    from evergreen.promote.registry import clear_alias

    registry.set_model_version_tag("m", "2", "evergreen.status", "champion")
    clear_alias(registry, "m", "challenger", "2")
    assert registry.get_model_version("m", "2").tags["evergreen.status"] == "champion"
