"""Compare-and-set alias moves on a real SQLite-backed MLflow registry, with MLflow failing at every step of a move
and two moves racing: ``champion`` never moves wrongly and exactly one version holds it afterwards."""

from __future__ import annotations

import itertools
import threading

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
from requests.exceptions import ConnectionError as RequestsConnectionError

from evergreen.promote.gate import GatePolicy, GateReport
from evergreen.promote.registry import (
    CHALLENGER,
    CHAMPION,
    GATE_OUTCOME_TAG,
    GATE_REPORT_TAG,
    GATE_SUMMARY_TAG,
    REJECTED,
    RETIRED,
    STATUS_TAG,
    AliasConflict,
    AliasMove,
    RegistryUnavailable,
    is_transient,
    move_alias,
    set_status,
    tag_gate_report,
)
from evergreen.promote.report import Check
from evergreen.tracking import aliases

_names = itertools.count(1)
NO_WAIT = {"sleep": lambda s: None}


def unavailable() -> MlflowException:
    return MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def model(client, tmp_path):
    """A fresh registered model with versions 1, 2 and 3, all candidates, no alias."""
    name = f"m{next(_names)}"
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, tmp_path.as_uri(), tags={STATUS_TAG: "candidate"})
    return name


def status(client, model) -> dict[str, str]:
    return {v: client.get_model_version(model, v).tags.get(STATUS_TAG) for v in ("1", "2", "3")}


class Faulty:
    """The real client, except that the ``nth`` calls of ``method`` fail with a 503: before the call reaches MLflow,
    or after it did its work (the answer is lost). ``meanwhile`` runs at the failure (another writer)."""

    def __init__(self, client, method, nth, *, after=False, meanwhile=None):
        self.client, self.method, self.nth, self.after, self.meanwhile = client, method, set(nth), after, meanwhile
        self.calls = 0

    def __getattr__(self, name):
        real = getattr(self.client, name)
        if name != self.method:
            return real

        def call(*args, **kwargs):
            self.calls += 1
            fail = self.calls in self.nth
            if fail and not self.after:
                self._fail()
            out = real(*args, **kwargs)
            if fail:
                self._fail()
            return out

        return call

    def _fail(self):
        if self.meanwhile:
            self.meanwhile()
        raise unavailable()


def test_first_champion_and_a_promotion_move_and_tag(client, model):
    first = move_alias(client, model, CHAMPION, "1", None, **NO_WAIT)
    assert first == AliasMove(model, CHAMPION, None, "1", True, 1)
    second = move_alias(client, model, CHAMPION, 2, 1, **NO_WAIT)
    assert (second.previous, second.new, second.changed) == ("1", "2", True)
    assert aliases(client, model) == {CHAMPION: "2"}
    assert status(client, model) == {"1": RETIRED, "2": "champion", "3": "candidate"}


def test_a_moved_alias_is_a_conflict_and_nothing_changes(client, model):
    client.set_registered_model_alias(model, CHAMPION, "2")
    with pytest.raises(AliasConflict, match=f"alias 'champion' of model '{model}' points to version 2, not version 1 "
                                            "as the decision assumed") as info:
        move_alias(client, model, CHAMPION, "3", "1", **NO_WAIT)
    assert (info.value.expected, info.value.found) == ("1", "2")
    assert aliases(client, model) == {CHAMPION: "2"}
    assert status(client, model) == {"1": "candidate", "2": "candidate", "3": "candidate"}


@pytest.mark.parametrize(
    "method, nth, after, calls",  # calls: how many times the failing method ran in all
    [
        ("set_registered_model_alias", {1}, False, 2),  # 503 between the check and the set: set again
        ("set_registered_model_alias", {1}, True, 1),  # the set landed, its answer was lost: not set twice
        ("get_registered_model", {1}, False, 3),  # the check failed: check, set, re-read
        ("get_registered_model", {2}, False, 3),  # the re-read failed: the next check finds the move done
        ("set_model_version_tag", {1, 2}, False, 4),  # the status tags failed twice, then both were set
    ],
)
def test_transient_failures_at_every_step_end_at_the_new_version(client, model, method, nth, after, calls):
    client.set_registered_model_alias(model, CHAMPION, "1")
    faulty = Faulty(client, method, nth, after=after)
    move = move_alias(faulty, model, CHAMPION, "2", "1", **NO_WAIT)
    assert (move.new, move.changed) == ("2", True)
    assert faulty.calls == calls
    assert aliases(client, model) == {CHAMPION: "2"}
    assert status(client, model) == {"1": RETIRED, "2": "champion", "3": "candidate"}


def test_another_move_during_a_5xx_is_a_conflict_not_an_overwrite(client, model):
    client.set_registered_model_alias(model, CHAMPION, "1")
    other = lambda: client.set_registered_model_alias(model, CHAMPION, "3")  # noqa: E731 - another writer's move
    faulty = Faulty(client, "set_registered_model_alias", {1}, meanwhile=other)
    with pytest.raises(AliasConflict, match="points to version 3, not version 1"):
        move_alias(faulty, model, CHAMPION, "2", "1", **NO_WAIT)
    assert aliases(client, model) == {CHAMPION: "3"}


def test_persistent_5xx_gives_up_without_moving(client, model):
    client.set_registered_model_alias(model, CHAMPION, "1")
    waits = []
    faulty = Faulty(client, "set_registered_model_alias", range(1, 100))
    with pytest.raises(RegistryUnavailable, match=f"moving alias 'champion' of model '{model}' from version 1 to "
                                                  "version 2: MLflow failed 3 times"):
        move_alias(faulty, model, CHAMPION, "2", "1", retries=2, backoff_s=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]
    assert aliases(client, model) == {CHAMPION: "1"}
    assert status(client, model)["1"] == "candidate"


def test_a_non_transient_error_is_not_retried(client, model):
    client.set_registered_model_alias(model, CHAMPION, "1")
    with pytest.raises(MlflowException) as info:
        move_alias(client, model, CHAMPION, "99", "1", **NO_WAIT)
    assert not isinstance(info.value, RegistryUnavailable)
    assert aliases(client, model) == {CHAMPION: "1"}


def test_a_retried_move_that_landed_is_a_no_op(client, model):
    move_alias(client, model, CHAMPION, "1", None, **NO_WAIT)
    again = move_alias(client, model, CHAMPION, "1", None, **NO_WAIT)
    assert (again.changed, again.attempts) == (False, 1)
    assert aliases(client, model) == {CHAMPION: "1"} and status(client, model)["1"] == "champion"


def test_two_racing_moves_one_wins(client, model):
    client.set_registered_model_alias(model, CHAMPION, "1")
    start = threading.Barrier(2)
    results: dict[str, object] = {}

    def race(version):
        start.wait()
        try:
            results[version] = move_alias(client, model, CHAMPION, version, "1", **NO_WAIT)
        except AliasConflict as exc:
            results[version] = exc

    threads = [threading.Thread(target=race, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [v for v, r in results.items() if isinstance(r, AliasMove)]
    losers = [r for r in results.values() if isinstance(r, AliasConflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert aliases(client, model) == {CHAMPION: winners[0]}
    assert losers[0].found == winners[0]
    assert [v for v, s in status(client, model).items() if s == "champion"] == winners


def test_challenger_start_and_stop(client, model):
    move_alias(client, model, CHAMPION, "1", None, **NO_WAIT)
    move_alias(client, model, CHALLENGER, "2", None, **NO_WAIT)
    assert aliases(client, model) == {CHAMPION: "1", CHALLENGER: "2"} and status(client, model)["2"] == "challenger"
    stop = move_alias(client, model, CHALLENGER, None, "2", previous_status=REJECTED, **NO_WAIT)
    assert (stop.previous, stop.new) == ("2", None)
    assert aliases(client, model) == {CHAMPION: "1"}
    assert status(client, model) == {"1": "champion", "2": REJECTED, "3": "candidate"}
    # the challenger that wins becomes champion; removing its challenger alias leaves its status alone
    move_alias(client, model, CHALLENGER, "3", None, **NO_WAIT)
    move_alias(client, model, CHAMPION, "3", "1", **NO_WAIT)
    move_alias(client, model, CHALLENGER, None, "3", **NO_WAIT)
    assert aliases(client, model) == {CHAMPION: "3"}
    assert status(client, model) == {"1": RETIRED, "2": REJECTED, "3": "champion"}


def test_gate_report_tags(client, model):
    report = GateReport("x", "roc_auc", "2", "1", "reject", "floor:roc_auc: 0.5 misses 0.6", False, 0.95,
                        GatePolicy().to_dict(), (Check("floor:roc_auc", "fail", "0.5 misses 0.6"),))
    tag_gate_report(client, model, "2", report, "runs:/abc/gate/report.json", **NO_WAIT)
    tags = client.get_model_version(model, "2").tags
    assert tags[GATE_OUTCOME_TAG] == "reject" and tags[GATE_REPORT_TAG] == "runs:/abc/gate/report.json"
    assert tags[GATE_SUMMARY_TAG] == report.summary and tags[STATUS_TAG] == REJECTED


def test_bad_arguments_and_error_classes(client, model):
    with pytest.raises(ValueError, match="alias 'prod' is not one the platform moves"):
        move_alias(client, model, "prod", "1", None)
    with pytest.raises(ValueError, match="status 'live' is not allowed"):
        set_status(client, model, "1", "live")
    assert is_transient(unavailable()) and is_transient(MlflowException("boom"))  # a bare one is a 500
    assert is_transient(RequestsConnectionError("reset"))
    assert not is_transient(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))
    assert not is_transient(ValueError("x"))
