"""The retrain policy: should this run of ``retrain_<model>`` train a new candidate, and why.

Pure: :func:`decide` takes what triggered the run (:class:`Trigger`), what the platform knows (:class:`Facts`) and
the model's :class:`~evergreen.config.RetrainPolicy`, and returns a :class:`Decision` with a reason code, a sentence
for people and the numbers behind it. Nothing here reads a clock, a store or a registry.

The rules, in order (the first that applies answers):

1. a backfill run never retrains, and a run whose every triggering signal came from a backfill is ignored
   (``force`` does not override this: backfills recompute facts, they never act on them);
2. a running A/B test (a version holds the ``challenger`` alias) blocks: a new candidate could not be judged
   until the test ends (``force`` does not override this either; stop or finish the test first);
3. why retrain: a manual run (a person asked), a drift or decay signal, or -- on the daily check -- a champion
   older than ``max_model_age_days`` or no champion at all (``bootstrap`` when nothing was ever registered);
   a daily check with a fresh champion answers no;
4. ``cooldown_hours`` since the last decision that launched a training, then at least ``min_new_rows`` labelled
   rows newer than the last trained window (all rows of the window when nothing was trained yet). ``force``
   skips these two, and the decision says it did.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from evergreen.config import MAX_TRAINING_WINDOW_DAYS, RetrainPolicy
from evergreen.context import RUN_ASSET, RUN_BACKFILL, RUN_MANUAL, RUN_SCHEDULED

# Reason codes (stable: recorded in the store and shown in the UI).
BACKFILL = "backfill"
AB_TEST_RUNNING = "ab_test_running"
MODEL_FRESH = "model_fresh"
NO_SIGNAL = "no_signal"
COOLDOWN = "cooldown"
NOT_ENOUGH_NEW_ROWS = "not_enough_new_rows"
MANUAL = "manual"
BOOTSTRAP = "bootstrap"
NO_CHAMPION = "no_champion"
CANDIDATE_PENDING = "candidate_pending"
MAX_MODEL_AGE = "max_model_age"
DRIFT = "drift"
DECAY = "decay"


class RetrainParamsError(ValueError):
    """The run's parameters are unusable (e.g. a training window that ends before it starts)."""


# What the Param schema's ``format: date`` accepts (RFC 3339 full-date); ``date.fromisoformat`` alone would also take
# 20261102 or 2026-W45-1.
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def flag(params: dict[str, Any], name: str) -> bool:
    """A boolean Param (``force``, ``dry_run``); absent is False. A string such as "false" is refused, not truthy."""
    value = params.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RetrainParamsError(f"param {name}={value!r}: expected true or false")
    return value


@dataclass(frozen=True)
class Signal:
    """One Asset event that triggered the run."""

    kind: str  # "drift" | "decay" (the last segment of the asset URI)
    asset: str
    backfill: bool
    day: str | None = None
    record_key: str | None = None
    source: str | None = None  # "<dag_id>/<run_id>" of the producing run


@dataclass(frozen=True)
class Trigger:
    run_type: str  # RUN_MANUAL | RUN_SCHEDULED | RUN_ASSET | RUN_BACKFILL (evergreen.context)
    signals: tuple[Signal, ...] = ()
    force: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class Facts:
    now: dt.datetime
    last_retrain_at: dt.datetime | None = None  # the last decision that launched a training (not a dry run)
    champion_version: str | None = None
    champion_created_at: dt.datetime | None = None
    challenger_version: str | None = None
    latest_version: str | None = None  # newest registered version, any status
    pending_candidate: str | None = None  # newest version newer than the champion still waiting at the gate
    new_rows: int = 0  # labelled rows newer than the last trained window (or in the window when none)
    new_rows_since: dt.date | None = None


@dataclass(frozen=True)
class Decision:
    retrain: bool
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_backfill_event(extra: dict[str, Any] | None, source_run_id: str | None) -> bool:
    """An Asset event from a backfill: its extra says so, or the run that emitted it was a backfill run."""
    return bool((extra or {}).get("backfill")) or str(source_run_id or "").startswith("backfill__")


def signal_from_event(asset_uri: str, extra: dict[str, Any] | None, source_dag_id: str | None,
                      source_run_id: str | None) -> Signal:
    extra = extra or {}
    return Signal(
        kind=str(extra.get("signal") or asset_uri.rstrip("/").rsplit("/", 1)[-1]),
        asset=asset_uri,
        backfill=is_backfill_event(extra, source_run_id),
        day=extra.get("day"),
        record_key=extra.get("record_key"),
        source=f"{source_dag_id}/{source_run_id}" if source_dag_id else None,
    )


def training_window(
    reference_day: dt.date,
    window_start: str | dt.date | None,
    window_end: str | dt.date | None,
    window_days: int,
) -> tuple[dt.date, dt.date]:
    """The training window ``[start, end)`` of lake days.

    ``end`` defaults to ``reference_day`` (the run's date: the last complete landing day is the day before), and
    ``start`` to ``end - window_days``.
    """

    def parse(value: str | dt.date | None, name: str) -> dt.date | None:
        if value in (None, ""):
            return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        try:
            if isinstance(value, str) and _DATE.match(value):
                return dt.date.fromisoformat(value)
        except ValueError:
            pass
        raise RetrainParamsError(f"param {name}={value!r}: expected a date YYYY-MM-DD (UTC)")

    if (not isinstance(window_days, int) or isinstance(window_days, bool)
            or not 1 <= window_days <= MAX_TRAINING_WINDOW_DAYS):
        raise RetrainParamsError(f"param window_days={window_days!r}: expected a whole number of days from 1 to "
                                 f"{MAX_TRAINING_WINDOW_DAYS}")
    end = parse(window_end, "window_end") or reference_day
    start = parse(window_start, "window_start") or end - dt.timedelta(days=window_days)
    if start >= end:
        raise RetrainParamsError(
            f"training window {start}/{end}: window_start must be before window_end (the end day is excluded)"
        )
    if (end - start).days > MAX_TRAINING_WINDOW_DAYS:
        raise RetrainParamsError(
            f"training window {start}/{end}: {(end - start).days} days is longer than the maximum of "
            f"{MAX_TRAINING_WINDOW_DAYS}; move window_start later"
        )
    return start, end


def _age_days(facts: Facts) -> float | None:
    if facts.champion_created_at is None:
        return None
    return (facts.now - facts.champion_created_at).total_seconds() / 86400.0


def decide(trigger: Trigger, facts: Facts, policy: RetrainPolicy) -> Decision:
    """Apply the rules of this module's docstring."""
    details: dict[str, Any] = {
        "run_type": trigger.run_type,
        "force": trigger.force,
        "dry_run": trigger.dry_run,
        "signals": [asdict(s) for s in trigger.signals],
        "champion_version": facts.champion_version,
        "challenger_version": facts.challenger_version,
        "latest_version": facts.latest_version,
        "pending_candidate": facts.pending_candidate,
        "new_rows": facts.new_rows,
        "new_rows_since": facts.new_rows_since.isoformat() if facts.new_rows_since else None,
        "min_new_rows": policy.min_new_rows,
        "cooldown_hours": policy.cooldown_hours,
        "max_model_age_days": policy.max_model_age_days,
        "last_retrain_at": facts.last_retrain_at.isoformat() if facts.last_retrain_at else None,
    }
    age = _age_days(facts)
    details["champion_age_days"] = None if age is None else round(age, 3)

    def no(reason: str, message: str) -> Decision:
        return Decision(False, reason, message, details)

    # 1. backfills
    if trigger.run_type == RUN_BACKFILL:
        return no(BACKFILL, "a backfill run never retrains: backfills recompute facts, they do not act on them")
    genuine = [s for s in trigger.signals if not s.backfill]
    ignored = [s for s in trigger.signals if s.backfill]
    details["ignored_backfill_signals"] = len(ignored)
    if trigger.signals and not genuine:
        kinds = ", ".join(sorted({f"{s.kind} ({s.day or '?'})" for s in ignored}))
        return no(BACKFILL, f"ignored {len(ignored)} backfill-originated signal(s): {kinds}; backfills never retrain")
    if trigger.run_type == RUN_ASSET and not genuine:
        return no(NO_SIGNAL, "asset-triggered run without any triggering event; nothing to act on")

    # 2. a running A/B test
    if facts.challenger_version is not None:
        return no(
            AB_TEST_RUNNING,
            f"an A/B test is running (challenger is version {facts.challenger_version}); a new candidate could "
            "not be judged until ab_analysis promotes or stops it",
        )

    # 2b. a candidate waiting at the gate: the daily check does not register another one after every cooldown
    if trigger.run_type == RUN_SCHEDULED and not genuine and facts.pending_candidate is not None:
        return no(
            CANDIDATE_PENDING,
            f"candidate version {facts.pending_candidate} is waiting at the gate (promote_<model>); the daily check "
            "registers no other until it is promoted or rejected (a drift or decay signal, or a manual run, still "
            "retrains)",
        )

    # 3. why
    never_trained = facts.latest_version is None and facts.champion_version is None
    if trigger.run_type == RUN_MANUAL:
        reason = BOOTSTRAP if never_trained else MANUAL
        why = "manual run" + (" (no model registered yet: bootstrap)" if never_trained else "")
    elif genuine:
        kinds = sorted({s.kind for s in genuine})
        reason = DECAY if DECAY in kinds else (kinds[0] if len(kinds) == 1 else DRIFT)
        days = ", ".join(sorted({f"{s.kind} on {s.day}" for s in genuine}))
        why = f"signal(s): {days}"
    elif facts.champion_version is None:
        reason = BOOTSTRAP if never_trained else NO_CHAMPION
        why = ("no model registered yet: bootstrap from the lake's history" if never_trained
               else f"no champion yet (latest version {facts.latest_version} was not promoted)")
    elif age is not None and age >= policy.max_model_age_days:
        reason, why = MAX_MODEL_AGE, (f"champion version {facts.champion_version} is {age:.1f} days old "
                                      f">= max_model_age_days={policy.max_model_age_days}")
    else:
        shown = "unknown" if age is None else f"{age:.1f}"
        return no(MODEL_FRESH, f"champion version {facts.champion_version} is {shown} days old "
                               f"< max_model_age_days={policy.max_model_age_days}; no signal")

    # 4. cooldown and new data (force skips both)
    forced_past: list[str] = []
    if facts.last_retrain_at is not None:
        hours = (facts.now - facts.last_retrain_at).total_seconds() / 3600.0
        details["hours_since_last_retrain"] = round(hours, 3)
        if hours < policy.cooldown_hours:
            if not trigger.force:
                return no(COOLDOWN, f"{why}; but the last retrain was {hours:.1f} h ago, inside cooldown_hours="
                                    f"{policy.cooldown_hours:g} (set force to retrain anyway)")
            forced_past.append(COOLDOWN)
    if facts.new_rows < policy.min_new_rows:
        if not trigger.force:
            since = f" since {facts.new_rows_since}" if facts.new_rows_since else ""
            return no(NOT_ENOUGH_NEW_ROWS, f"{why}; but only {facts.new_rows} new labelled rows{since} "
                                           f"< min_new_rows={policy.min_new_rows} (set force to retrain anyway)")
        forced_past.append(NOT_ENOUGH_NEW_ROWS)
    details["forced_past"] = forced_past
    forced = f"; forced past {', '.join(forced_past)}" if forced_past else ""
    return Decision(True, reason, f"retrain: {why}{forced}", details)
