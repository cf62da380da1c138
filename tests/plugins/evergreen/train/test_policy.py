"""evergreen.train.policy: the pure retrain decision, rule by rule."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from evergreen.config import RetrainPolicy
from evergreen.context import RUN_ASSET, RUN_BACKFILL, RUN_MANUAL, RUN_SCHEDULED
from evergreen.train import policy as rp

NOW = dt.datetime(2026, 11, 20, 4, 0, tzinfo=dt.timezone.utc)
POLICY = RetrainPolicy(cooldown_hours=24, min_new_rows=1000, max_model_age_days=30, training_window_days=30)


def facts(**kw) -> rp.Facts:
    base = dict(
        now=NOW,
        last_retrain_at=NOW - dt.timedelta(days=5),
        champion_version="3",
        champion_created_at=NOW - dt.timedelta(days=5),
        challenger_version=None,
        latest_version="3",
        new_rows=5000,
        new_rows_since=dt.date(2026, 11, 15),
    )
    return rp.Facts(**{**base, **kw})


def drift(day="2026-11-19", backfill=False) -> rp.Signal:
    return rp.Signal(kind="drift", asset="evergreen://churn/drift", backfill=backfill, day=day)


def decay(day="2026-11-19") -> rp.Signal:
    return rp.Signal(kind="decay", asset="evergreen://churn/decay", backfill=False, day=day)


def asset_run(*signals, **kw) -> rp.Trigger:
    return rp.Trigger(run_type=RUN_ASSET, signals=tuple(signals), **kw)


def test_drift_signal_with_new_data_retrains():
    d = rp.decide(asset_run(drift()), facts(), POLICY)
    assert (d.retrain, d.reason) == (True, rp.DRIFT)
    assert "drift on 2026-11-19" in d.message and d.details["forced_past"] == []


def test_decay_wins_the_reason_when_both_signals_arrive():
    d = rp.decide(asset_run(drift(), decay()), facts(), POLICY)
    assert (d.retrain, d.reason) == (True, rp.DECAY)


def test_backfill_originated_signals_are_ignored_even_with_force():
    d = rp.decide(asset_run(drift(backfill=True), force=True), facts(), POLICY)
    assert (d.retrain, d.reason) == (False, rp.BACKFILL)
    assert d.details["ignored_backfill_signals"] == 1


def test_a_genuine_signal_next_to_a_backfill_one_still_counts():
    d = rp.decide(asset_run(drift(backfill=True), decay()), facts(), POLICY)
    assert (d.retrain, d.reason) == (True, rp.DECAY)
    assert d.details["ignored_backfill_signals"] == 1


def test_backfill_run_never_retrains_even_when_forced():
    d = rp.decide(rp.Trigger(run_type=RUN_BACKFILL, force=True), facts(champion_version=None), POLICY)
    assert (d.retrain, d.reason) == (False, rp.BACKFILL)


@pytest.mark.parametrize(("extra", "source_run_id", "expected"), [
    ({"backfill": True}, "scheduled__2026-11-19T02:00:00+00:00", True),
    ({"backfill": False}, "backfill__2026-11-19T02:00:00+00:00", True),
    ({"backfill": False}, "scheduled__2026-11-19T02:00:00+00:00", False),
    (None, None, False),
])
def test_backfill_events_are_recognised_by_extra_or_by_the_producing_run(extra, source_run_id, expected):
    assert rp.is_backfill_event(extra, source_run_id) is expected
    signal = rp.signal_from_event("evergreen://churn/decay", extra, "evaluate_performance_churn", source_run_id)
    assert (signal.kind, signal.backfill) == ("decay", expected)


def test_running_ab_test_blocks_even_a_forced_manual_run():
    d = rp.decide(rp.Trigger(run_type=RUN_MANUAL, force=True), facts(challenger_version="4"), POLICY)
    assert (d.retrain, d.reason) == (False, rp.AB_TEST_RUNNING)
    assert "challenger is version 4" in d.message


def test_cooldown_blocks_then_force_overrides_and_says_so():
    recent = facts(last_retrain_at=NOW - dt.timedelta(hours=3))
    refused = rp.decide(asset_run(drift()), recent, POLICY)
    assert (refused.retrain, refused.reason) == (False, rp.COOLDOWN)
    assert "3.0 h ago" in refused.message and "cooldown_hours=24" in refused.message
    forced = rp.decide(asset_run(drift(), force=True), recent, POLICY)
    assert (forced.retrain, forced.reason, forced.details["forced_past"]) == (True, rp.DRIFT, [rp.COOLDOWN])


def test_cooldown_is_measured_in_hours():
    just_outside = facts(last_retrain_at=NOW - dt.timedelta(hours=24, minutes=1))
    assert rp.decide(asset_run(drift()), just_outside, POLICY).retrain
    just_inside = facts(last_retrain_at=NOW - dt.timedelta(hours=23, minutes=59))
    assert not rp.decide(asset_run(drift()), just_inside, POLICY).retrain


def test_too_few_new_rows_blocks_then_force_overrides():
    few = facts(new_rows=999)
    refused = rp.decide(asset_run(decay()), few, POLICY)
    assert (refused.retrain, refused.reason) == (False, rp.NOT_ENOUGH_NEW_ROWS)
    assert "only 999 new labelled rows since 2026-11-15 < min_new_rows=1000" in refused.message
    forced = rp.decide(asset_run(decay(), force=True), few, POLICY)
    assert forced.retrain and forced.details["forced_past"] == [rp.NOT_ENOUGH_NEW_ROWS]
    assert rp.decide(asset_run(decay()), facts(new_rows=1000), POLICY).retrain


def test_daily_check_retrains_an_old_champion_only():
    daily = rp.Trigger(run_type=RUN_SCHEDULED)
    fresh = rp.decide(daily, facts(champion_created_at=NOW - dt.timedelta(days=29)), POLICY)
    assert (fresh.retrain, fresh.reason) == (False, rp.MODEL_FRESH)
    old = rp.decide(daily, facts(champion_created_at=NOW - dt.timedelta(days=30, hours=1)), POLICY)
    assert (old.retrain, old.reason) == (True, rp.MAX_MODEL_AGE)
    assert old.details["champion_age_days"] == pytest.approx(30.042, abs=1e-3)


def test_old_champion_without_new_data_is_not_retrained():
    daily = rp.Trigger(run_type=RUN_SCHEDULED)
    d = rp.decide(daily, facts(champion_created_at=NOW - dt.timedelta(days=60), new_rows=0), POLICY)
    assert (d.retrain, d.reason) == (False, rp.NOT_ENOUGH_NEW_ROWS)


def test_bootstrap_when_nothing_was_ever_registered():
    empty = facts(champion_version=None, champion_created_at=None, latest_version=None, last_retrain_at=None)
    for trigger in (rp.Trigger(run_type=RUN_SCHEDULED), rp.Trigger(run_type=RUN_MANUAL)):
        d = rp.decide(trigger, empty, POLICY)
        assert (d.retrain, d.reason) == (True, rp.BOOTSTRAP)
    # the bootstrap still needs data: min_new_rows counts every row of the window when nothing was trained
    assert rp.decide(rp.Trigger(run_type=RUN_SCHEDULED), facts(
        champion_version=None, champion_created_at=None, latest_version=None, new_rows=10), POLICY
    ).reason == rp.NOT_ENOUGH_NEW_ROWS


def test_daily_check_without_champion_after_a_rejected_candidate_retrains_on_new_data():
    d = rp.decide(rp.Trigger(run_type=RUN_SCHEDULED), facts(champion_version=None, champion_created_at=None),
                  POLICY)
    assert (d.retrain, d.reason) == (True, rp.NO_CHAMPION)


def test_manual_run_obeys_cooldown_unless_forced():
    recent = facts(last_retrain_at=NOW - dt.timedelta(hours=1))
    assert rp.decide(rp.Trigger(run_type=RUN_MANUAL), recent, POLICY).reason == rp.COOLDOWN
    forced = rp.decide(rp.Trigger(run_type=RUN_MANUAL, force=True), recent, POLICY)
    assert (forced.retrain, forced.reason) == (True, rp.MANUAL)


def test_asset_run_without_events_does_nothing():
    d = rp.decide(asset_run(), facts(), POLICY)
    assert (d.retrain, d.reason) == (False, rp.NO_SIGNAL)


def test_decision_is_json_friendly():
    import json

    d = rp.decide(asset_run(drift(backfill=True), decay()), facts(), POLICY)
    assert json.loads(json.dumps(d.to_dict()))["details"]["signals"][1]["kind"] == "decay"


def test_training_window_defaults_and_overrides():
    day = dt.date(2026, 11, 20)
    assert rp.training_window(day, None, None, 30) == (dt.date(2026, 10, 21), day)
    assert rp.training_window(day, None, "2026-11-10", 5) == (dt.date(2026, 11, 5), dt.date(2026, 11, 10))
    assert rp.training_window(day, "2026-11-01", None, 30) == (dt.date(2026, 11, 1), day)


@pytest.mark.parametrize(("start", "end", "days", "message"), [
    ("2026-11-10", "2026-11-10", 30, "training window 2026-11-10/2026-11-10: window_start must be before window_end"),
    ("2026-11-31", None, 30, "param window_start='2026-11-31': expected a date YYYY-MM-DD"),
    (None, None, 0, "param window_days=0: expected a whole number of days from 1 to 3650"),
    # bounds and formats the Param schemas also hold, for runs that reach decide without them
    (None, None, 3651, "param window_days=3651: expected a whole number of days from 1 to 3650"),
    (None, None, True, "param window_days=True: expected a whole number of days"),
    (None, None, "30", "param window_days='30': expected a whole number of days"),
    ("20261102", None, 30, "param window_start='20261102': expected a date YYYY-MM-DD"),
    ("2026-W45-1", None, 30, "param window_start='2026-W45-1': expected a date YYYY-MM-DD"),
    (None, 20261110, 30, "param window_end=20261110: expected a date YYYY-MM-DD"),
    (None, "2026-11-10T00:00:00", 30, "param window_end='2026-11-10T00:00:00': expected a date YYYY-MM-DD"),
    ("1990-01-01", "2026-11-10", 30, "training window 1990-01-01/2026-11-10: 13462 days is longer than the maximum "
                                     "of 3650; move window_start later"),
])
def test_bad_window_params_are_named(start, end, days, message):
    with pytest.raises(rp.RetrainParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rp.training_window(dt.date(2026, 11, 20), start, end, days)


def test_longest_window_is_allowed():
    end = dt.date(2026, 11, 20)
    assert rp.training_window(end, None, None, 3650) == (end - dt.timedelta(days=3650), end)
    assert rp.training_window(end, "2016-11-22", None, 1) == (dt.date(2016, 11, 22), end)


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (None, False)])
def test_flag_params_are_booleans(value, expected):
    assert rp.flag({"force": value}, "force") is expected
    assert rp.flag({}, "force") is False


@pytest.mark.parametrize("value", ["false", "true", 0, 1, [], {}])
def test_flag_param_that_is_not_a_boolean_is_named(value):
    with pytest.raises(rp.RetrainParamsError, match=re.escape(f"param dry_run={value!r}: expected true or false")):
        rp.flag({"dry_run": value}, "dry_run")


def test_daily_check_waits_while_a_candidate_is_at_the_gate():
    """Issue 9 item 11: with a candidate waiting at the gate, the daily check registers no other after every
    cooldown; a genuine signal or a manual run still retrains."""
    waiting = facts(champion_version=None, champion_created_at=None, pending_candidate="3")
    d = rp.decide(rp.Trigger(run_type=RUN_SCHEDULED), waiting, POLICY)
    assert (d.retrain, d.reason) == (False, rp.CANDIDATE_PENDING)
    assert "version 3" in d.message and d.details["pending_candidate"] == "3"
    old = facts(champion_created_at=NOW - dt.timedelta(days=400), pending_candidate="3")
    assert rp.decide(rp.Trigger(run_type=RUN_SCHEDULED), old, POLICY).reason == rp.CANDIDATE_PENDING
    assert rp.decide(rp.Trigger(run_type=RUN_MANUAL), waiting, POLICY).retrain
    assert rp.decide(asset_run(drift()), waiting, POLICY).retrain
