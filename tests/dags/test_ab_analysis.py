"""ab_analysis_churn through Airflow's dag.test(), on simulated experiments in a real store and a real MLflow registry:

* a better challenger is promoted (champion moved by compare-and-set, challenger alias removed, ledger entries);
* an A/A test continues (nothing moves); a worse challenger is stopped (alias removed, version tagged rejected);
* a sample-ratio mismatch stops the analysis and alerts; each bad input (no traffic in one arm, outcomes without
  assignments, zero variance) is an explained cannot_decide; a backfill never decides; no challenger, no run.

Each experiment registers two fresh versions, points champion and challenger at them with the ab_start ledger entry
promote_churn writes, logs its predictions (arms, versions) and outcomes in its own days, and records the ingestion
of every landing day its labels need (churn's label_delay_days is 30). The versions are registered without being
trained: the analysis reads the prediction log, never the models. Own store, MLflow database and lake.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pandas as pd
import pendulum
import pytest

from dag_runs import run_as_backfill as run_backfill
from dag_runs import states, xcom
from evergreen.config import get_config

pytestmark = pytest.mark.slow

DAG_ID = "ab_analysis_churn"
DELAY = get_config().model("churn").performance.label_delay_days
DAYS = 7  # prediction days per experiment
_first_days = itertools.count(0)


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("ab_analysis")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                  json.dumps({"conn_type": "mlflow", "extra": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        from airflow.models.pool import Pool

        Pool.create_or_update_pool("evergreen_registry", slots=1, description="registry moves",
                                   include_deferred=False)
        yield root


@pytest.fixture
def client():
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook().get_conn()


@pytest.fixture
def store():
    from evergreen.hooks.store import StoreHook

    return StoreHook().get_conn()


def aliases(client) -> dict[str, str]:
    from evergreen import tracking

    return tracking.aliases(client, "churn")


class Experiment:
    """Two fresh versions as champion and challenger, started on their own first day (weeks apart per experiment)."""

    def __init__(self, client, store, tmp_path):
        from evergreen.promote import ledger

        self.client, self.store = client, store
        self.start = dt.date(2027, 1, 1) + dt.timedelta(days=20 * next(_first_days))
        if not aliases(client) and not client.search_registered_models("name='churn'"):
            client.create_registered_model("churn")
        made = [client.create_model_version("churn", tmp_path.as_uri(), tags={"evergreen.status": "candidate"})
                for _ in range(2)]
        self.champion, self.challenger = (str(v.version) for v in made)
        client.set_registered_model_alias("churn", "champion", self.champion)
        client.set_registered_model_alias("churn", "challenger", self.challenger)
        ts = dt.datetime.combine(self.start, dt.time(), tzinfo=dt.timezone.utc)
        ledger.append(store, ledger.LedgerEntry(
            model="churn", event=ledger.AB_START, ts=ts,
            actor=ledger.Actor(dag_id="promote_churn", run_id=f"seed-{self.challenger}", task_id="apply"),
            alias="challenger", new_version=self.challenger, outcome="ab_test"))

    @property
    def logical(self) -> pendulum.DateTime:
        """The run whose matured window is the experiment's DAYS days: interval end start + DAYS + delay."""
        end = self.start + dt.timedelta(days=DAYS + DELAY)
        return pendulum.datetime(end.year, end.month, end.day, 12, tz="UTC")

    @property
    def day(self) -> str:
        return (self.start + dt.timedelta(days=DAYS + DELAY - 1)).isoformat()

    def land(self, n_champion: int, n_challenger: int, p_champion: float, p_challenger: float, *, seed: int = 0,
             arm_logged: bool = True, ingest: bool = True) -> None:
        """One request per customer spread over the DAYS days, each arm with its churn rate, outcomes and the
        ingestion records of every landing day the labels need."""
        from evergreen.ingest.tasks import RECORD_KIND
        from evergreen.store.base import Record

        rng = np.random.default_rng(seed)
        n = n_champion + n_challenger
        arm = np.array(["champion"] * n_champion + ["challenger"] * n_challenger, dtype=object)
        ids = [f"{self.challenger}-r{i}" for i in range(n)]
        offsets = rng.integers(0, DAYS * 86_400_000_000, n)
        ts = pd.Timestamp(self.start, tz="UTC") + pd.to_timedelta(offsets, unit="us")
        label = (rng.random(n) < np.where(arm == "challenger", p_challenger, p_champion)).astype(float)
        score = rng.random(n)
        pred = pd.DataFrame({"request_id": ids, "entity_id": [f"{self.challenger}-e{i}" for i in range(n)], "ts": ts,
                             "model_version": np.where(arm == "challenger", self.challenger, self.champion),
                             "arm": arm if arm_logged else None, "prediction": (score >= .5) * 1.0, "score": score})
        self.store.upsert_predictions("churn", pred, [])
        self.store.upsert_outcomes("churn", pd.DataFrame({"request_id": ids, "ts": ts + pd.Timedelta(days=3),
                                                          "label": label}))
        if ingest:
            for i in range(DAYS + DELAY):
                d = self.start + dt.timedelta(days=i)
                self.store.put_record(Record(RECORD_KIND, f"churn/{d.isoformat()}", "churn",
                                             dt.datetime.combine(d, dt.time(), tzinfo=dt.timezone.utc),
                                             {"rows_read": 0, "landed": 0, "quarantined": 0, "files": []}))

    def record(self):
        rec = self.store.get_record("ab_analysis", f"churn/{self.day}")
        assert rec is not None, f"no ab_analysis record for {self.day}"
        return rec.payload

    def ledger(self) -> list:
        from evergreen.promote import ledger

        return [e for e in ledger.entries(self.store, "churn") if e.previous_version == self.challenger
                or e.new_version == self.challenger]


@pytest.fixture
def experiment(client, store, tmp_path):
    return Experiment(client, store, tmp_path)


@pytest.fixture
def run_as_backfill(run_dag):
    return lambda logical: run_backfill(run_dag, DAG_ID, logical)


def test_a_better_challenger_is_promoted_by_compare_and_set(run_dag, experiment, client):
    from evergreen.promote import ledger

    e = experiment
    e.land(8000, 8000, 0.30, 0.22, seed=1)  # churn 22% vs 30%, ~16,000 customers >= the minimum sample size
    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "success"}
    summary = xcom(run, "analyze")
    assert summary["status"] == "promote", summary["reason"]
    assert aliases(client) == {"champion": e.challenger}
    assert client.get_model_version("churn", e.challenger).tags["evergreen.status"] == "champion"
    assert client.get_model_version("churn", e.champion).tags["evergreen.status"] == "retired"
    entries = {(x.event, x.alias, x.previous_version, x.new_version) for x in e.ledger()
               if x.actor.run_id == run.run_id}
    assert entries == {("alias_move", "champion", e.champion, e.challenger),
                       ("alias_move", "challenger", e.challenger, None),
                       ("ab_stop", "challenger", e.challenger, None)}
    stop = next(x for x in e.ledger() if x.event == ledger.AB_STOP)
    assert stop.outcome == "promote" and stop.details["numbers"]["gain_cs"][0] > 0
    record = e.record()
    assert record["status"] == "promote" and record["units"] >= record["minimum_units"]
    assert record["window"] == {"start": e.start.isoformat(),
                                "end": (e.start + dt.timedelta(days=DAYS)).isoformat()}
    assert record["labels"]["mature"] is True and record["backfill"] is False
    assert record["effect"]["method"] == "two_proportion_z" and record["bootstrap"]["high"] < 0

    # no challenger now: the short-circuit skips the rest
    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "skipped", "decide": "skipped"}


def test_an_aa_test_continues_and_nothing_moves(run_dag, experiment, client):
    e = experiment
    e.land(2000, 2000, 0.30, 0.30, seed=2)
    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "skipped"}
    assert xcom(run, "analyze")["status"] == "continue"
    assert aliases(client) == {"champion": e.champion, "challenger": e.challenger}
    assert e.record()["status"] == "continue" and not [x for x in e.ledger() if x.event == "ab_stop"]


def test_a_backfill_never_decides_then_a_scheduled_look_stops_a_worse_challenger(run_dag, run_as_backfill,
                                                                                 experiment, client):
    e = experiment
    e.land(2000, 2000, 0.30, 0.42, seed=3)  # churn 42% vs 30%: worse
    run = run_as_backfill(e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "skipped"}
    assert xcom(run, "analyze")["status"] == "stop"  # the record says what the numbers say ...
    assert e.record()["backfill"] is True
    assert aliases(client) == {"champion": e.champion, "challenger": e.challenger}  # ... and nothing moved
    assert not e.ledger()[1:]  # only the ab_start entry

    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "success"}
    assert aliases(client) == {"champion": e.champion}
    assert client.get_model_version("churn", e.challenger).tags["evergreen.status"] == "rejected"
    events = sorted((x.event, x.outcome) for x in e.ledger() if x.actor.run_id == run.run_id)
    assert events == [("ab_stop", "stop"), ("alias_move", "stop")]
    assert e.record()["stop_status"] == "rejected"


def test_a_sample_ratio_mismatch_stops_the_analysis_and_alerts(run_dag, experiment, client, store):
    e = experiment
    e.land(2400, 1600, 0.30, 0.20, seed=4)
    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "skipped"}
    summary = xcom(run, "analyze")
    assert summary["status"] == "srm" and summary["numbers"]["srm_p"] < 0.001
    alert = store.get_record("alert", f"churn/{e.day}/srm")
    assert alert is not None and "sample-ratio mismatch" in alert.payload["summary"]
    numbers = alert.payload["numbers"]
    assert (numbers["champion_count"], numbers["challenger_count"]) == (2400, 1600)
    assert (numbers["champion_version"], numbers["challenger_version"]) == (e.champion, e.challenger)
    assert aliases(client) == {"champion": e.champion, "challenger": e.challenger}


@pytest.mark.parametrize("case, why", [
    ("no_traffic", "no traffic in arm 'challenger'"),
    ("no_assignments", "outcomes without assignments"),
    ("zero_variance", "zero variance"),
    ("immature", "labels"),
])
def test_bad_input_cannot_decide_and_says_why(run_dag, experiment, client, case, why):
    e = experiment
    if case == "no_traffic":
        e.land(2000, 0, 0.3, 0.3)
    elif case == "no_assignments":
        e.land(1000, 1000, 0.3, 0.3, arm_logged=False)
    elif case == "zero_variance":
        e.land(1000, 1000, 0.0, 0.0)
    else:
        e.land(1000, 1000, 0.3, 0.2, ingest=False)  # outcomes in the store, but no landing day recorded
    run = run_dag(DAG_ID, e.logical)
    assert states(run) == {"has_challenger": "success", "analyze": "success", "decide": "skipped"}
    summary = xcom(run, "analyze")
    assert summary["status"] == ("immature" if case == "immature" else "cannot_decide")
    assert why in summary["reason"]
    assert e.record()["status"] == summary["status"]
    assert aliases(client) == {"champion": e.champion, "challenger": e.challenger}


def test_a_test_replaced_between_analysis_and_decision_is_never_decided(run_dag, experiment, client, monkeypatch):
    """analyze reads the aliases outside the registry pool; if a promotion moved `challenger` before decide takes
    the slot, decide fails naming both states and moves nothing (the replaced challenger never becomes champion)."""
    from evergreen.experiment import tasks

    e = experiment
    e.land(8000, 8000, 0.30, 0.22, seed=11)  # a clear promote
    other = str(client.create_model_version("churn", "file:///nowhere", tags={"evergreen.status": "candidate"})
                .version)
    real = tasks.analyze_run

    def analyze_then_another_test_starts(model_name, context):
        summary = real(model_name, context)
        client.set_registered_model_alias("churn", "challenger", other)
        return summary

    monkeypatch.setattr(tasks, "analyze_run", analyze_then_another_test_starts)
    run = run_dag(DAG_ID, e.logical)
    assert states(run)["decide"] == "failed"
    assert run.get_task_instance("decide").try_number == 1  # final, not retried
    assert aliases(client) == {"champion": e.champion, "challenger": other}
    assert not [x for x in e.ledger() if x.actor.run_id == run.run_id]
    client.delete_registered_model_alias("churn", "challenger")
