"""evergreen.tracking: the search-filter quoting rule, checked against a real MLflow tracking store and registry
(SQLite in a temp folder): a hostile value matches exactly the version or run that carries it, nothing else."""

from __future__ import annotations

import datetime as dt

import pytest

from evergreen import tracking
from evergreen.monitor.runs import upsert_monitoring_run
from evergreen.train.register import find_registered_version

HOSTILE = [
    "x' or name='y",  # closes the literal and widens the search, were it pasted in
    "x'' or name=''y",  # SQL's doubled-quote escape
    'say "hi"',
    "back\\slash",
    "mid\\' or name='y",  # a backslash-escaped quote inside the value
    "tick`tick",
    "`evergreen.airflow_run_id`",
    "-- comment",
    "/* comment",
    "$$dollar$$",
    "semi; colon",
    "",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def registry(client, tmp_path_factory):
    """Model ``m`` with one version per hostile run id plus a plain one; model ``y`` with a version of its own."""
    source = tmp_path_factory.mktemp("model").as_uri()
    by_value = {}
    for name in ("m", "y"):
        client.create_registered_model(name)
    for value in [*HOSTILE, "plain"]:
        version = client.create_model_version("m", source, tags={f"{tracking.TAG}airflow_run_id": value})
        by_value[value] = version.version
    other = client.create_model_version("y", source, tags={f"{tracking.TAG}airflow_run_id": "y"})
    return by_value, other.version


@pytest.mark.parametrize("value", HOSTILE)
def test_quoted_value_matches_exactly_its_version(client, registry, value):
    by_value, _ = registry
    terms = f"name={tracking.quote('m')} and tags.`{tracking.TAG}airflow_run_id`={tracking.quote(value)}"
    found = client.search_model_versions(terms)
    assert [v.version for v in found] == [by_value[value]]
    assert found[0].tags[f"{tracking.TAG}airflow_run_id"] == value


def test_hostile_run_id_finds_only_the_version_it_registered(client, registry):
    by_value, _ = registry
    found = find_registered_version(client, "m", airflow_run_id="x' or name='y")
    assert found is not None and found.version == by_value["x' or name='y"]
    # model y's version (run id "y") is what the pasted-in filter would have added
    assert tracking.versions(client, "y")[0].tags[f"{tracking.TAG}airflow_run_id"] == "y"
    assert find_registered_version(client, "m", airflow_run_id="y") is None


def test_monitoring_upsert_finds_its_run_again_by_a_hostile_key(client):
    experiment = tracking.get_or_create_experiment(client, "evergreen/m/monitoring")
    ts = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
    hostile, plain = "drift/m/2026-11-02' or tags.x='y", "drift/m/2026-11-02"
    first = upsert_monitoring_run(client, experiment, key=hostile, run_name="a", ts=ts, metrics={"s": 1.0}, tags={})
    again = upsert_monitoring_run(client, experiment, key=hostile, run_name="a", ts=ts, metrics={"s": 2.0}, tags={})
    other = upsert_monitoring_run(client, experiment, key=plain, run_name="b", ts=ts, metrics={"s": 1.0}, tags={})
    assert first == again != other
    assert len(client.search_runs([experiment])) == 2


@pytest.mark.parametrize(("value", "why"), [
    ("both ' and \"", "holds both ' and \""),
    ("ends in \\", "ends in a backslash"),
])
def test_value_without_a_safe_literal_is_refused_by_name(value, why):
    with pytest.raises(ValueError, match="search filter value .* cannot be quoted for MLflow") as info:
        tracking.quote(value)
    assert repr(value) in str(info.value) and why in str(info.value)


def test_quote_prefers_single_quotes():
    assert tracking.quote("manual__2026-11-06T00:00:00+00:00") == "'manual__2026-11-06T00:00:00+00:00'"
    assert tracking.quote("it's") == '"it\'s"'
