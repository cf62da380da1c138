"""promote_churn through Airflow's dag.test() under faults and bad input (issue 9): in every case ``champion`` does
not move wrongly, exactly one version carries ``evergreen.status=champion`` afterwards (the alias's), the ledger
holds no ``alias_move`` for a move that did not happen, and a rejected version's status says so.

Faults: a metric below a floor, a metric missing, a holdout overlapping the champion's training days, MLflow
answering 503 around the alias set (once before it lands, once after, on every try, and to everything from right
after it landed until the next try), a model artifact that no longer loads, a failed Kubeflow run
(``retrain_churn``), and two promotions racing (the other lands before this run's apply reads the alias, right after
its set, or -- in this process -- between its read and its set).
Bad input: a version that does not exist, one spelled "01" (MLflow reads it as version 1), one without a holdout, one
that cannot load (saved with pickle), one whose signature no longer matches the model config.

Faults are injected inside this process (dag.test() runs the tasks here): a patched model config, deleted version
tags, a damaged artifact file, a patched MlflowClient method, another move made at the right moment. Each test
names in its docstring the production line it guards; it fails when that protection is removed.

Versions are trained as in tests/dags/test_promote.py (its ``train_version``, on this module's own store, MLflow
database and lake): a weak champion and a strong candidate that the gate promotes when nothing is wrong. Each test
gates its own copy of that candidate (a new version of the same model artifact with the same tags), so what one test
breaks never reaches the next, and the champion is put back after a test that moved it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading

import pendulum
import pytest

from evergreen import lake, tracking
from evergreen.config import get_config
from evergreen_demo import simulate
from test_promote import GOOD, LOGICAL, NO_APPROVAL, WORSE, conf, states, train_version, xcom

pytestmark = pytest.mark.slow

DAG_ID = "promote_churn"
MODEL = "churn"
STATUS = "evergreen.status"
FAILED_APPLY = {"gate": "success", "approve": "skipped", "apply": "failed"}
CANDIDATE_ASSET = "evergreen://churn/candidate"


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory, airflow_db):
    root = tmp_path_factory.mktemp("promote-faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_EVERGREEN_STORE", json.dumps({"conn_type": "sqlite", "host": str(root / "store.db")}))
        mp.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT",
                  json.dumps({"conn_type": "mlflow", "extra": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}))
        mp.setenv("EVERGREEN_LAKE_URI", str(root / "lake"))
        model = get_config().model(MODEL)
        for i in range(8):  # lake days 11-02..11-09, 700 labelled rows each (one holdout day >= min_holdout_rows)
            day = dt.date(2026, 11, 1) + dt.timedelta(days=i)
            frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, 700))
            lake.write_parquet_atomic(frame, lake.labelled_path(MODEL, day + dt.timedelta(days=1)))
        from airflow.models.pool import Pool

        Pool.create_or_update_pool("evergreen_registry", slots=1, description="registry moves",
                                   include_deferred=False)
        yield root


@dataclasses.dataclass(frozen=True)
class Versions:
    champion: str  # WORSE, trained on 11-02..11-03 (holdout 11-04): the champion every test starts from
    candidate: str  # GOOD, trained on 11-05..11-07 (holdout 11-08): promoted over the champion; never gated itself
    overlap: str  # GOOD, trained on 11-02 (holdout 11-03, one of the champion's training days)


@pytest.fixture(scope="module")
def trained(isolated):
    from evergreen.promote import registry as moves

    champion = train_version(isolated, "2026-11-02", "2026-11-05", WORSE, "faults-champion")
    candidate = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "faults-candidate")
    overlap = train_version(isolated, "2026-11-02", "2026-11-04", GOOD, "faults-overlap")
    moves.move_alias(client(), MODEL, tracking.CHAMPION, champion, None)
    return Versions(champion, candidate, overlap)


@pytest.fixture(autouse=True)
def champion_restored(trained):
    """Every test starts with the trained champion holding ``champion`` and no challenger; a test that moved it
    gets it put back afterwards (outside the ledger: these tests read only their own runs' entries)."""
    from evergreen.promote import registry as moves

    assert holder() == trained.champion and holder(tracking.CHALLENGER) is None
    yield
    current = holder()
    if current != trained.champion:
        moves.move_alias(client(), MODEL, tracking.CHAMPION, trained.champion, current)
    if holder(tracking.CHALLENGER) is not None:
        moves.move_alias(client(), MODEL, tracking.CHALLENGER, None, holder(tracking.CHALLENGER))


@pytest.fixture
def retries_without_delay(dagbag, monkeypatch):
    """``apply`` keeps its retries (default_args: 2) but without the 30 s backoff, so a test can watch every try."""
    task = dagbag.get_dag(DAG_ID).get_task("apply")
    monkeypatch.setattr(task, "retry_delay", dt.timedelta(0))
    monkeypatch.setattr(task, "retry_exponential_backoff", 0)
    return task


# --- helpers ---------------------------------------------------------------------------------------------------


def client():
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook().get_conn()


def store():
    from evergreen.hooks.store import StoreHook

    return StoreHook().get_conn()


def target():
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.train.register import MlflowTarget

    hook = MlflowHook()
    return MlflowTarget(hook.tracking_uri, hook.registry_uri, hook.artifact_location or "")


def holder(alias: str = tracking.CHAMPION) -> str | None:
    return tracking.aliases(client(), MODEL).get(alias)


def status(version: str) -> str | None:
    return client().get_model_version(MODEL, version).tags.get(STATUS)


def copy_of(version: str, *, without: tuple[str, ...] = ()) -> str:
    """A new candidate version of the same model artifact with the same tags; then ``without`` deleted from it."""
    from evergreen.train.register import fluent_mlflow

    c = client()
    src = c.get_model_version(MODEL, version)
    with fluent_mlflow(target()):  # MLflow resolves a models:/m-... source through the fluent tracking URI
        new = c.create_model_version(MODEL, source=src.source, run_id=src.run_id, tags=dict(src.tags))
    for key in without:
        c.delete_model_version_tag(MODEL, new.version, key)
    return str(new.version)


def assert_champion(expected: str) -> None:
    """The alias points at ``expected`` and it is the one version of the model whose status is champion."""
    assert holder() == expected
    tagged = [str(v.version) for v in tracking.versions(client(), MODEL) if (v.tags or {}).get(STATUS) == "champion"]
    assert tagged == [expected], f"versions with status champion: {tagged}"


def entries(run) -> list[tuple]:
    """This run's ledger entries: (event, outcome, alias, previous, new)."""
    from evergreen.promote import ledger

    return sorted((e.event, e.outcome or "", e.alias or "", e.previous_version, e.new_version)
                  for e in ledger.entries(store(), MODEL) if e.actor.run_id == run.run_id)


def alias_moves() -> list[tuple]:
    from evergreen.promote import ledger

    return [(e.previous_version, e.new_version) for e in ledger.entries(store(), MODEL) if e.event == ledger.ALIAS_MOVE]


def with_model(monkeypatch, **changes) -> None:
    """The churn model config every task reads (get_config() is cached per process) with ``changes``."""
    models = get_config().models
    monkeypatch.setitem(models, MODEL, dataclasses.replace(models[MODEL], **changes))


def gate_rejects(run, version: str, champion: str, *reasons: str) -> dict:
    """The run gated ``version`` to reject with every one of ``reasons``, tagged it rejected, recorded only the gate
    entry, and moved nothing."""
    assert states(run) == NO_APPROVAL
    gate = xcom(run, "gate")
    assert (gate["version"], gate["outcome"], gate["expected_champion"]) == (version, "reject", champion), gate
    for reason in reasons:
        assert reason in gate["reason"], gate["reason"]
    assert xcom(run, "apply")["moved"] is False
    assert status(version) == "rejected"
    assert client().get_model_version(MODEL, version).tags["evergreen.gate_outcome"] == "reject"
    assert entries(run) == [("gate", "reject", "", champion, version)]
    assert_champion(champion)
    return gate


def log_of(capfd) -> str:
    return "".join(capfd.readouterr())


# --- control ---------------------------------------------------------------------------------------------------


def test_control_an_unbroken_copy_of_the_candidate_is_promoted(run_dag, trained):
    """Every fault below is applied to a copy of this candidate: without the fault the gate promotes it, so each
    rejection below is the fault's doing (a dry run: the gate decides, nothing is tagged, recorded or moved)."""
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version, dry_run=True))
    gate = xcom(run, "gate")
    assert (gate["outcome"], gate["expected_champion"]) == ("promote", trained.champion), gate["reason"]
    assert "is superior" in gate["reason"]
    assert entries(run) == [] and status(version) == "candidate"
    assert_champion(trained.champion)


# --- faults ----------------------------------------------------------------------------------------------------


def test_metric_below_the_floor_is_rejected(run_dag, trained, monkeypatch):
    """Guards gate._floors: ``ok = ... x >= floor`` -> a FAIL check that rejects."""
    model = get_config().model(MODEL)
    with_model(monkeypatch, gate=dataclasses.replace(model.gate, floors={"roc_auc": 0.999}))
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    gate_rejects(run, version, trained.champion, "floor:roc_auc: roc_auc value ", " misses floor 0.999")


def test_missing_metric_is_rejected(run_dag, trained):
    """Guards gate.decide's ``metric`` check (and _floors' "no holdout metric" FAIL): a version whose holdout metric
    tags are gone is rejected naming the tag, never compared on the gate's own scoring alone."""
    tags = ("evergreen.metric.roc_auc", "evergreen.metric.roc_auc_ci_low", "evergreen.metric.roc_auc_ci_high")
    version = copy_of(trained.candidate, without=tags)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    gate_rejects(run, version, trained.champion,
                 f"metric: version {version} has no holdout roc_auc; its training run must log it "
                 "(tag evergreen.metric.<metric>)",
                 "floor:roc_auc: the candidate has no holdout roc_auc to hold against the floor 0.55")


def test_holdout_overlapping_the_champions_training_days_is_rejected(run_dag, trained):
    """Guards gate._unseen: ``if c_hold < h_hold and c_end > h_start: FAIL``. The champion trained on 11-02..11-03;
    this candidate's holdout is 11-03, where the champion would be scored on a day it trained on."""
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=trained.overlap))
    gate_rejects(run, trained.overlap, trained.champion,
                 "holdout_unseen: the candidate's holdout [2026-11-03, 2026-11-04) overlaps champion version "
                 f"{trained.champion}'s training days [2026-11-02, 2026-11-04)")


def unavailable():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    return MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)


@pytest.mark.parametrize("landed", [False, True], ids=["before-the-set-lands", "after-the-set-landed"])
def test_mlflow_503_at_the_set_is_retried_and_moves_once(run_dag, trained, monkeypatch, landed):
    """MLflow answers 503 to the alias set once: before it lands (set again) or after it landed (the answer was
    lost: the next read finds the move done and does not set twice). Guards registry._retrying / is_transient and
    move_alias's ``if current == new: return state["set"]``: the move completes inside one try of ``apply``, is
    reported as a move, tags the old champion retired and the new one champion, and is recorded once."""
    from mlflow import MlflowClient

    real = MlflowClient.set_registered_model_alias
    calls = []

    def flaky(self, name, alias, version):
        calls.append(version)
        if len(calls) == 1 and not landed:
            raise unavailable()
        out = real(self, name, alias, version)
        if len(calls) == 1:
            raise unavailable()
        return out

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", flaky)
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    assert states(run) == NO_APPROVAL
    assert run.get_task_instance("apply").try_number == 1  # the registry's retry, not Airflow's
    assert calls == [version] * (1 if landed else 2)
    assert xcom(run, "apply")["moved"] is True
    assert_champion(version)
    assert status(trained.champion) == "retired"
    assert entries(run) == [("alias_move", "promote", "champion", trained.champion, version),
                            ("gate", "promote", "", trained.champion, version)]


def test_mlflow_down_for_every_try_moves_nothing(run_dag, trained, monkeypatch, retries_without_delay, capfd):
    """MLflow answers 503 to every alias set: each try of ``apply`` gives up after the registry's retries with
    RegistryUnavailable, and nothing is moved, tagged or recorded. Guards registry._retrying's give-up
    (``raise RegistryUnavailable``) and apply_run writing the ledger's alias_move only after move_alias returned."""
    from mlflow import MlflowClient

    from evergreen.promote import registry as moves

    waits = []
    monkeypatch.setitem(moves.move_alias.__kwdefaults__, "sleep", waits.append)  # the backoff, without waiting

    def down(*args, **kwargs):
        raise unavailable()

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", down)
    before = alias_moves()
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    assert states(run) == FAILED_APPLY
    assert xcom(run, "gate")["outcome"] == "promote"
    tries = run.get_task_instance("apply").try_number
    assert tries == 1 + retries_without_delay.retries
    assert waits == [0.5, 1.0, 2.0, 4.0] * tries  # every try used all of the registry's retries
    assert (f"moving alias 'champion' of model 'churn' from version {trained.champion} to version {version}: "
            "MLflow failed 5 times") in log_of(capfd)
    assert_champion(trained.champion)
    assert status(version) == "candidate"
    assert entries(run) == [("gate", "promote", "", trained.champion, version)]
    assert alias_moves() == before


def test_mlflow_gone_right_after_the_set_landed_is_settled_by_the_retry(run_dag, trained, monkeypatch,
                                                                          retries_without_delay):
    """The alias set lands, then MLflow answers 503 to everything for the rest of the try: the try fails with the
    alias moved but the status tags and the ledger entry not written. The next try of ``apply`` finds the move done
    (never sets it again), writes the status tags and records the move once. Guards move_alias's ``if current ==
    new`` branch followed by its status tags on the already-done path, and apply_run's ledger append on a re-run."""
    from mlflow import MlflowClient

    from evergreen.promote import registry as moves
    from evergreen.promote import tasks

    monkeypatch.setitem(moves.move_alias.__kwdefaults__, "sleep", lambda s: None)
    down, sets = {"on": False}, []
    real_set, real_apply = MlflowClient.set_registered_model_alias, tasks.apply_run

    def set_then_go_away(self, name, alias, version):
        sets.append(version)
        real_set(self, name, alias, version)
        down["on"] = True
        raise unavailable()

    def unless_down(method):
        real = getattr(MlflowClient, method)

        def call(self, *args, **kwargs):
            if down["on"]:
                raise unavailable()
            return real(self, *args, **kwargs)

        return call

    def back_for_the_next_try(model_name, decision, context):
        try:
            return real_apply(model_name, decision, context)
        finally:
            down["on"] = False

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_then_go_away)
    for method in ("get_registered_model", "set_model_version_tag"):
        monkeypatch.setattr(MlflowClient, method, unless_down(method))
    monkeypatch.setattr(tasks, "apply_run", back_for_the_next_try)
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    assert states(run) == NO_APPROVAL
    assert run.get_task_instance("apply").try_number == 2
    assert sets == [version]  # set once: the retry read the alias and found the move done
    assert_champion(version)
    assert status(trained.champion) == "retired"
    assert entries(run) == [("alias_move", "promote", "champion", trained.champion, version),
                            ("gate", "promote", "", trained.champion, version)]


def test_a_model_whose_artifact_no_longer_loads_is_rejected(run_dag, isolated, trained):
    """The candidate's stored model file is damaged after registration. Guards tasks.gather_facts' ``except`` around
    load_model (InfraFacts(loaded=False)) and gate._infra's ``infra:load`` FAIL: rejected naming the loader's error,
    not a crashed gate and never promoted."""
    from pathlib import Path
    from urllib.parse import urlparse

    version = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "faults-damaged")
    c = client()
    mv = c.get_model_version(MODEL, version)
    location = c.get_logged_model(mv.source.removeprefix("models:/")).artifact_location
    (skops,) = Path(urlparse(location).path).glob("*.skops")
    skops.write_bytes(b"not a zip file: the artifact store lost this model")
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    gate_rejects(run, version, trained.champion, "infra:load: the version does not load through the platform's "
                                                 "skops loader: ")


def test_a_failed_kubeflow_run_registers_nothing_emits_nothing_and_moves_nothing(run_dag, trained, capfd,
                                                                                  monkeypatch):
    """retrain_churn whose Kubeflow run fails in a component: ``train`` fails for good, ``register_candidate`` never
    runs, so no version is registered, no candidate Asset event reaches promote_churn, and champion is untouched.
    Guards KubeflowPipelineOperator._execute_local's ``if result["state"] != RESULT_SUCCEEDED: raise
    AirflowFailException`` and register_candidate's default trigger rule (all_success) in dags/retrain.py.

    The local runner's child is replaced by the result it writes when a component fails (kfp.local itself, failing
    in 'prepare' on a window without data, is run by tests/dags/test_retrain.py::
    test_window_without_data_fails_naming_the_window, which checks the message and that nothing is registered; it
    does not look at the Asset event or the champion, which is what this test adds)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from evergreen.operators.kfp_local import LocalRunner

    def failed_run(self, on_line):
        on_line("ValueError: the training step crashed")
        return {"state": "FAILED", "outputs": {}, "failed_task": "train", "pipeline": "evergreen-training",
                "error": "ValueError: the training step crashed", "local_run": None, "run_dir": None}

    monkeypatch.setattr(LocalRunner, "run", failed_run)
    before = [str(v.version) for v in tracking.versions(client(), MODEL)]
    run = run_dag("retrain_churn", pendulum.datetime(2026, 11, 10, 4, tz="UTC"), conf={
        "force": True, "dry_run": False, "window_start": None, "window_end": None, "window_days": 30,
        "hyperparameters": GOOD})
    assert {ti.task_id: ti.state for ti in run.get_task_instances()} == {
        "decide": "success", "train": "failed", "register_candidate": "upstream_failed"}
    assert run.get_task_instance("train").try_number == 1  # a pipeline that ran and failed is final
    assert ("Kubeflow pipeline 'evergreen-training' failed in task 'train': ValueError: the training step crashed"
            in log_of(capfd))
    assert [str(v.version) for v in tracking.versions(client(), MODEL)] == before
    with create_session() as session:
        events = session.scalars(select(AssetEvent.id).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                                 .where(AssetModel.uri == CANDIDATE_ASSET,
                                        AssetEvent.source_run_id == run.run_id)).all()
    assert events == []
    assert_champion(trained.champion)


# --- two promotions racing -------------------------------------------------------------------------------------


def test_race_another_promotion_landed_before_apply_reads_the_alias(run_dag, trained, monkeypatch,
                                                                    retries_without_delay, capfd):
    """Two promotions gated against the same champion; the other one's apply took the pool slot first and moved
    champion to its version. This run's apply finds the alias elsewhere: AliasConflict, nothing changed, and the
    task fails for good (a retry could only find the same). Guards registry.move_alias's ``if current != expected:
    raise AliasConflict`` and apply_run's final failure on it."""
    from evergreen.promote import registry as moves
    from evergreen.promote import tasks

    other, version = copy_of(trained.candidate), copy_of(trained.candidate)
    real_apply, landed = tasks.apply_run, []

    def other_promotion_first(model_name, decision, context):
        if not landed:
            landed.append(moves.move_alias(client(), MODEL, tracking.CHAMPION, other, trained.champion))
        return real_apply(model_name, decision, context)

    monkeypatch.setattr(tasks, "apply_run", other_promotion_first)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    assert states(run) == FAILED_APPLY
    assert run.get_task_instance("apply").try_number == 1  # final: no Airflow retry
    assert (xcom(run, "gate")["outcome"], xcom(run, "gate")["expected_champion"]) == ("promote", trained.champion)
    assert (f"alias 'champion' of model 'churn' points to version {other}, not version {trained.champion} as the "
            "decision assumed: someone else moved it. Nothing was changed") in log_of(capfd)
    assert_champion(other)
    assert status(version) == "candidate"
    assert entries(run) == [("gate", "promote", "", trained.champion, version)]


def test_race_another_move_overwrites_right_after_the_set(run_dag, trained, monkeypatch, retries_without_delay,
                                                          capfd):
    """Two moves in two processes both read the old champion; the other's set lands right after this run's. The
    re-read after the set finds the other version: AliasConflict, this move is not reported as a win, its status
    tags and its ledger entry are not written, and the other version stands. Guards move_alias's re-read
    ``if after != new: raise AliasConflict(..., after_set=True)``."""
    from mlflow import MlflowClient

    from evergreen.promote import registry as moves

    other, version = copy_of(trained.candidate), copy_of(trained.candidate)
    real = MlflowClient.set_registered_model_alias

    def then_the_other_lands(self, name, alias, v):
        real(self, name, alias, v)
        if v == version:  # the rest of the other process's move: its read saw the old champion before this set
            real(self, name, alias, other)
            moves.set_status(self, MODEL, trained.champion, "retired")
            moves.set_status(self, MODEL, other, "champion")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", then_the_other_lands)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    assert states(run) == FAILED_APPLY
    assert (f"alias 'champion' of model 'churn' points to version {other} right after this move set it to version "
            f"{version}: another move overwrote it") in log_of(capfd)
    assert_champion(other)
    assert status(version) == "candidate"
    assert entries(run) == [("gate", "promote", "", trained.champion, version)]


def test_race_a_move_in_this_process_between_read_and_set_waits_and_loses(run_dag, trained, monkeypatch):
    """Another move of champion starts in this process (another thread) after this run's apply read the alias and
    before it set it. It waits for the per-model lock, then finds the alias moved and fails with AliasConflict;
    this run's move, whose compare held, stands. Guards move_alias's ``with _lock(model):``.

    Across processes the lock does not reach: a move whose set and re-read both fall between this read and this set
    would be overwritten unseen (MLflow has no conditional update). That is what the ``evergreen_registry`` pool
    (one slot) on ``apply`` prevents; dag.test() runs no pools."""
    from evergreen.promote import registry as moves

    other, version = copy_of(trained.candidate), copy_of(trained.candidate)
    real_aliases, race = moves.aliases, {}

    def competitor():
        try:
            race["result"] = moves.move_alias(client(), MODEL, tracking.CHAMPION, other, trained.champion)
        except moves.AliasConflict as exc:
            race["result"] = exc

    def read_then_race(c, model):
        out = real_aliases(c, model)
        if "thread" not in race:  # apply's first read, inside its move
            race["thread"] = threading.Thread(target=competitor)
            race["thread"].start()
            race["thread"].join(timeout=2.0)
            race["waited"] = race["thread"].is_alive()
        return out

    monkeypatch.setattr(moves, "aliases", read_then_race)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    race["thread"].join(timeout=60)
    assert race["waited"] is True, "the other move did not wait for this one"
    assert isinstance(race["result"], moves.AliasConflict), race["result"]
    assert (race["result"].expected, race["result"].found) == (trained.champion, version)
    assert states(run) == NO_APPROVAL
    assert xcom(run, "apply")["moved"] is True
    assert_champion(version)
    assert status(other) == "candidate" and status(trained.champion) == "retired"
    assert entries(run) == [("alias_move", "promote", "champion", trained.champion, version),
                            ("gate", "promote", "", trained.champion, version)]


# --- bad input -------------------------------------------------------------------------------------------------


def test_a_version_that_does_not_exist_fails_the_gate_naming_it(run_dag, trained, capfd):
    """Guards tasks.gate_run's ``except MlflowException: _fail(... has no version ...)``: the gate fails for good
    (AirflowFailException, no retries), naming the version and what to do; approve and apply never run."""
    before = alias_moves()
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version="9999"))
    assert states(run) == {"gate": "failed", "approve": "upstream_failed", "apply": "upstream_failed"}
    assert run.get_task_instance("gate").try_number == 1
    assert "model 'churn' has no version '9999'" in (text := log_of(capfd)) and "name a registered version" in text
    assert entries(run) == [] and alias_moves() == before
    assert_champion(trained.champion)


def test_a_version_named_with_a_leading_zero_is_the_champion_not_a_candidate(run_dag, trained):
    """Param ``version`` "01" names the champion version 1 (MLflow reads it as a number): a no-op, not a gate run
    that rejects the champion as "already the champion" and tags it rejected (which left no version with status
    champion). Guards tasks.gate_run's ``version = str(candidate.version)`` (MLflow's own spelling)."""
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=f"0{trained.champion}"))
    assert states(run) == {"gate": "success", "approve": "skipped", "apply": "success"}
    gate = xcom(run, "gate")
    assert (gate["version"], gate["outcome"]) == (trained.champion, "noop"), gate
    assert f"version {trained.champion} already holds alias 'champion'" in gate["reason"]
    assert entries(run) == []
    assert_champion(trained.champion)


def test_a_candidate_named_with_a_leading_zero_is_recorded_as_its_version(run_dag, trained, retries_without_delay):
    """Param ``version`` "0<n>" gates and moves version n and records n. Guards the same line as above: without it
    the set landed on version n, the re-read found "n", not "0n", and every try of apply failed with AliasConflict,
    leaving champion moved with no ledger entry and no status tags (the old champion still tagged champion)."""
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=f"0{version}"))
    assert states(run) == NO_APPROVAL
    assert (xcom(run, "gate")["version"], xcom(run, "gate")["outcome"]) == (version, "promote")
    assert_champion(version)
    assert entries(run) == [("alias_move", "promote", "champion", trained.champion, version),
                            ("gate", "promote", "", trained.champion, version)]


@pytest.mark.parametrize("how", ["tag-deleted", "file-deleted"])
def test_a_version_without_its_holdout_is_rejected(run_dag, isolated, trained, how):
    """Guards tasks.gather_facts' holdout read (``holdout_error`` -> InfraFacts.score_error, no comparison) and
    gate._infra / gate._compare's FAILs: no holdout, no scoring, rejected naming the tag or the file."""
    if how == "tag-deleted":
        version = copy_of(trained.candidate, without=("evergreen.holdout_uri",))
        reason = f"version {version} has no tag evergreen.holdout_uri: no holdout to score"
    else:
        version = train_version(isolated, "2026-11-05", "2026-11-09", GOOD, "faults-holdout-gone")
        uri = client().get_model_version(MODEL, version).tags["evergreen.holdout_uri"]
        lake.remove(uri)
        reason = f"holdout {uri} cannot be read"
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    gate_rejects(run, version, trained.champion, f"infra:latency: scoring the sample failed: {reason}",
                 "comparison: no paired comparison")


def test_a_version_that_cannot_load_is_rejected(run_dag, trained):
    """A version registered by hand with MLflow's default serialization (cloudpickle), with every tag a pipeline-made
    version carries. Guards modelio.load_model's ``if fmt != "skops": raise UntrustedModelError`` (the model is
    never unpickled) and the gate's ``infra:load`` FAIL."""
    import mlflow
    import mlflow.sklearn

    from evergreen.train.modelio import load_model
    from evergreen.train.register import fluent_mlflow

    src = client().get_model_version(MODEL, trained.candidate)
    pipeline = load_model(f"models:/{MODEL}/{trained.candidate}", target())
    with fluent_mlflow(target()):
        with mlflow.start_run(experiment_id=client().get_run(src.run_id).info.experiment_id) as run:
            info = mlflow.sklearn.log_model(pipeline, name="model",
                                            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        version = str(client().create_model_version(MODEL, source=info.model_uri, run_id=run.info.run_id,
                                                    tags=dict(src.tags), model_id=info.model_id).version)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    gate_rejects(run, version, trained.champion,
                 "infra:load: the version does not load through the platform's skops loader: UntrustedModelError: ",
                 "saved with serialization format 'cloudpickle'; Evergreen loads only skops models")


def test_a_signature_that_no_longer_matches_the_model_config_is_rejected(run_dag, trained, monkeypatch):
    """The model config gained a feature after the version was trained. Guards tasks._signature_problem (the model's
    ``feature_names_in_`` against the config's features) and the gate's ``infra:signature`` FAIL."""
    from evergreen.config import FeatureSpec

    model = get_config().model(MODEL)
    with_model(monkeypatch, features=(*model.features, FeatureSpec(name="contract_months", type="int", min=0)))
    version = copy_of(trained.candidate)
    run = run_dag(DAG_ID, LOGICAL, conf=conf(version=version))
    names = [f.name for f in model.features]
    gate_rejects(run, version, trained.champion,
                 f"infra:signature: signature does not match the model config: the model expects features {names}; "
                 f"the model config declares {[*names, 'contract_months']}")
