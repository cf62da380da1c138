"""The ledger on a real SQLite store and a MongoDB one (mongomock): append-only by deterministic keys, order,
the rollback helper and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from evergreen.promote.ledger import (
    AB_START,
    ALIAS_MOVE,
    GATE,
    KIND,
    ROLLBACK,
    Actor,
    LedgerEntry,
    LedgerError,
    append,
    champion_history,
    entries,
    main,
    previous_champion,
)
from evergreen.store import open_store
from evergreen.store.base import RecordConflict

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.timezone.utc)
PROMOTE_RUN = Actor("promote_churn", "asset_triggered__2026-12-01T09:00:00", "decide")


@pytest.fixture(params=["sqlite", "mongomock"])
def uri(request, tmp_path):
    """Both backends (the CLI test that runs a subprocess uses SQLite: mongomock lives in this process only)."""
    if request.param == "mongomock":
        return f"mongomock://ledger-{tmp_path.name}/evergreen"
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(uri):
    with open_store(uri) as s:
        yield s


def gate(version="4", champion="3", outcome="promote", ts=T0, actor=PROMOTE_RUN, **change) -> LedgerEntry:
    base = dict(model="churn", event=GATE, ts=ts, actor=actor, previous_version=champion, new_version=version,
                outcome=outcome, reason="roc_auc gain +0.017 [+0.004, +0.030] is superior",
                report_summary=f"{outcome}: version {version} vs champion {champion}",
                report_uri="runs:/abc/gate/report.json")
    return LedgerEntry(**{**base, **change})


def move(previous, new, minutes, event=ALIAS_MOVE, actor=PROMOTE_RUN, alias="champion") -> LedgerEntry:
    return LedgerEntry("churn", event, T0 + dt.timedelta(minutes=minutes), actor, alias, previous, new,
                       reason=f"{event} {previous} -> {new}")


def test_append_is_append_only_by_key(store, caplog):
    entry = gate()
    assert append(store, entry) is True
    caplog.set_level("INFO", logger="evergreen.promote.ledger")
    # a retry of the same task at a later moment: the same entry, a no-op that says so; the first time stays
    assert append(store, gate(ts=T0 + dt.timedelta(hours=1))) is False
    assert "already recorded at 2026-12-01T09:00:00+00:00; nothing to do" in caplog.text
    with pytest.raises(RecordConflict, match=f"ledger entry {entry.key} already exists with a different payload"):
        append(store, gate(reason="something else"))
    assert entries(store, "churn") == [entry]
    record = store.get_record(KIND, entry.key)
    assert record.payload["actor"]["run_id"] == PROMOTE_RUN.run_id and "ts" not in record.payload


def test_keys_are_deterministic_and_name_the_action():
    entry = gate()
    assert entry.key == "churn/gate/-/3>4/promote_churn/asset_triggered__2026-12-01T09:00:00/decide"
    assert gate(ts=T0 + dt.timedelta(days=1)).key == entry.key
    assert gate(actor=Actor("promote_churn", "manual__x", "decide")).key != entry.key
    mapped = Actor("d", "r", "t", map_index=2)
    assert mapped.key == "d/r/t/2"
    assert Actor(user="alice", ref="req-17").key == "user:alice/req-17"
    long = gate(actor=Actor("d" * 250, "r" * 250, "t"))
    assert len(long.key) == 256 and long.key.startswith("churn/gate/-/3>4/ddd")
    assert long.key != gate(actor=Actor("d" * 250, "r" * 249 + "s", "t")).key
    with pytest.raises(ValueError, match="needs an Airflow run"):
        _ = gate(actor=Actor(user="alice")).key
    with pytest.raises(ValueError, match="ledger event 'deploy' is not allowed"):
        gate(event="deploy")


def test_actor_from_an_airflow_context():
    ti = SimpleNamespace(dag_id="rollback_churn", run_id="manual__2026-12-02", task_id="move", map_index=0,
                         try_number=1)
    actor = Actor.from_context({"ti": ti, "dag_run": SimpleNamespace(run_type="manual")}, user="alice")
    assert actor == Actor("rollback_churn", "manual__2026-12-02", "move", 0, "alice")
    assert actor.describe() == "rollback_churn/manual__2026-12-02/move/0 (by alice)"


def test_entries_come_back_in_order_and_per_model(store):
    later, earlier = move("3", "4", 5), gate()
    append(store, later)
    append(store, earlier)
    append(store, LedgerEntry("other", GATE, T0, PROMOTE_RUN, new_version="1", outcome="reject"))
    assert entries(store, "churn") == [earlier, later]
    assert entries(store, "churn", start=T0 + dt.timedelta(minutes=1)) == [later]


def test_previous_champion_follows_promotions_and_rollbacks(store):
    rollback_run = Actor("rollback_churn", "manual__1", "move", user="alice")
    history = [move(None, "1", 0), move("1", "2", 10), move("2", "3", 20),
               move(None, "9", 25, alias="challenger", event=ALIAS_MOVE),  # a challenger never counts
               LedgerEntry("churn", AB_START, T0 + dt.timedelta(minutes=26), PROMOTE_RUN, "challenger", None, "9")]
    for e in history:
        append(store, e)
    assert champion_history(entries(store, "churn")) == ["1", "2", "3"]
    assert previous_champion(store, "churn", current="3") == "2"
    append(store, move("3", "2", 30, event=ROLLBACK, actor=rollback_run))
    # a second rollback goes further back, never forward to 3 again
    assert previous_champion(store, "churn", current="2") == "1"
    with pytest.raises(LedgerError, match="registry's champion is version 7 but the ledger's last champion move is "
                                          "to version 2"):
        previous_champion(store, "churn", current="7")
    assert previous_champion(store, "nobody") is None


def _fill(store):
    append(store, gate(reason="roc_auc gain +0.017\n[+0.004, +0.030] is superior | ok"))
    append(store, move("3", "4", 1))


def test_cli_prints_a_readable_table(store, uri, capsys):
    _fill(store)
    assert main(["--model", "churn", "--store-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ts", "(UTC)", "event", "alias", "versions", "outcome", "actor", "reason", "/",
                                "report"]
    assert lines[1].startswith("2026-12-01 09:00:00  gate ") and "3 -> 4" in lines[1] and "promote" in lines[1]
    assert "roc_auc gain +0.017 [+0.004, +0.030] is superior | ok [runs:/abc/gate/report.json]" in lines[1]
    assert lines[2].startswith("2026-12-01 09:01:00  alias_move  champion  3 -> 4")
    assert len(lines) == 3
    assert main(["--model", "nobody", "--store-uri", uri]) == 0
    assert capsys.readouterr().out == "no ledger entries for model 'nobody'\n"
    assert main(["--model", "churn", "--store-uri", uri, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in rows] == ["gate", "alias_move"] and rows[0]["ts"] == "2026-12-01T09:00:00+00:00"


def test_cli_runs_as_a_module_on_the_embedded_store(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    with open_store(f"sqlite:///{home / 'store.db'}") as s:
        _fill(s)
    env = {**os.environ, "EVERGREEN_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "evergreen.promote.ledger", "--model", "churn"], env=env,
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "alias_move  champion  3 -> 4" in out and out.count("\n") == 3


def test_cli_reads_the_dags_store_by_default_and_never_guesses_in_production(store, uri, capsys, monkeypatch):
    """Without --store-uri the CLI reads the evergreen_store Connection, as the DAGs do; outside embedded mode a
    missing Connection is an error naming it, not an empty ledger read from a local SQLite file."""
    import json as _json

    if not uri.startswith("sqlite:"):
        pytest.skip("a Connection names a real server or file; mongomock lives in this process only")
    _fill(store)
    monkeypatch.setenv("AIRFLOW_CONN_EVERGREEN_STORE", _json.dumps({"conn_type": "sqlite",
                                                                     "host": uri.removeprefix("sqlite:///")}))
    assert main(["--model", "churn"]) == 0
    assert "3 -> 4" in capsys.readouterr().out
    monkeypatch.delenv("AIRFLOW_CONN_EVERGREEN_STORE")
    monkeypatch.setenv("EVERGREEN_EMBEDDED", "0")
    with pytest.raises(SystemExit):
        main(["--model", "churn"])
    assert "evergreen_store" in capsys.readouterr().err
