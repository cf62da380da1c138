"""The ledger: an append-only history of every gate outcome, approval answer, alias move, A/B start and stop, and rollback.

MLflow keeps no alias history; this is it. Each entry is a store record of kind ``ledger`` written with
``append_only=True``, under a key made from what the entry is about -- model, event, alias, previous and new
version, and who caused it (the Airflow DAG, run and task, or a person and a reference) -- never from the time or
the text. So a retried task writes the same key: the same payload is a no-op that says so, a different one is a
:class:`~evergreen.store.base.RecordConflict`, and history is never rewritten.

The entry's time is the event's, kept by the first write (only the payload is compared). Entries read back in the
store's order, ``(ts, key)``.

``python -m evergreen.promote.ledger --model churn [--store-uri URI] [--json]`` prints a model's ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.jsonable import jsonable
from evergreen.store.base import Record, RecordConflict, to_utc
from evergreen.tracking import CHAMPION

if TYPE_CHECKING:
    from evergreen.store.base import Store

log = logging.getLogger(__name__)

KIND = "ledger"
GATE, APPROVAL, ALIAS_MOVE, AB_START, AB_STOP, ROLLBACK = (
    "gate", "approval", "alias_move", "ab_start", "ab_stop", "rollback")
EVENTS = (GATE, APPROVAL, ALIAS_MOVE, AB_START, AB_STOP, ROLLBACK)
_KEY_CHARS = 256  # the store's key column


class LedgerError(RuntimeError):
    """The ledger cannot answer: the message names the model and what disagrees."""


@dataclass(frozen=True)
class Actor:
    """Who caused an entry: an Airflow task (dag, run, task, map index), a person (with a reference that makes the
    action unique, e.g. the request id), or both (the user who triggered a manual run)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int = -1
    user: str | None = None
    ref: str | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any], user: str | None = None) -> Actor:
        """The task instance of an Airflow context (``evergreen.context.airflow_info``)."""
        from evergreen.context import airflow_info

        info = airflow_info(context)
        index = info["map_index"]
        return cls(info["dag_id"], info["run_id"], info["task_id"], -1 if index is None else int(index), user)

    @property
    def key(self) -> str:
        if self.run_id:
            task = f"/{self.task_id}" if self.task_id else ""
            return f"{self.dag_id}/{self.run_id}{task}" + (f"/{self.map_index}" if self.map_index >= 0 else "")
        if self.user and self.ref:
            return f"user:{self.user}/{self.ref}"
        raise ValueError("a ledger entry needs an Airflow run (dag_id, run_id) or a user with a reference")

    def describe(self) -> str:
        who = self.key
        return f"{who} (by {self.user})" if self.user and self.run_id else who


@dataclass(frozen=True)
class LedgerEntry:
    model: str
    event: str
    ts: dt.datetime
    actor: Actor
    alias: str | None = None
    previous_version: str | None = None
    new_version: str | None = None
    reason: str = ""
    outcome: str | None = None  # gate outcomes: reject, ab_test, promote
    report_summary: str = ""
    report_uri: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"ledger event '{self.event}' is not allowed; use one of {', '.join(EVENTS)}")
        for name in ("previous_version", "new_version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))
        object.__setattr__(self, "ts", to_utc(self.ts))

    @property
    def key(self) -> str:
        """What the entry is about and who caused it; a retry of the same action gives the same key."""
        key = (f"{self.model}/{self.event}/{self.alias or '-'}/{self.previous_version or '-'}>"
               f"{self.new_version or '-'}/{self.actor.key}")
        if len(key) <= _KEY_CHARS:
            return key
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{key[:_KEY_CHARS - 33]}~{digest}"  # long DAG and run ids: a prefix to read, a hash to be unique

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        del out["ts"]  # the time is the record's: a retry at another moment is still the same entry
        return jsonable(out)

    @classmethod
    def from_record(cls, record: Record) -> LedgerEntry:
        data = dict(record.payload)
        data["actor"] = Actor(**data["actor"])
        return cls(ts=record.ts, **data)


def append(store: Store, entry: LedgerEntry) -> bool:
    """Write ``entry``; True when written, False when this very entry was already there (a retry: a no-op, logged).

    A different entry under the same key raises :class:`~evergreen.store.base.RecordConflict` naming the key.
    """
    payload = entry.payload()
    existing = store.get_record(KIND, entry.key)
    if existing is not None:
        if json.dumps(existing.payload, sort_keys=True) == json.dumps(payload, sort_keys=True):
            log.info("ledger %s: already recorded at %s; nothing to do", entry.key, existing.ts.isoformat())
            return False
        raise RecordConflict(f"{store.description}: ledger entry {entry.key} already exists with a different "
                             f"payload (recorded {existing.ts.isoformat()}); the ledger is append-only")
    store.put_record(Record(KIND, entry.key, entry.model, entry.ts, payload), append_only=True)
    log.info("ledger %s: recorded", entry.key)
    return True


def entries(store: Store, model: str, start: dt.datetime | None = None,
            end: dt.datetime | None = None) -> list[LedgerEntry]:
    """The model's entries in the store's order ``(ts, key)``, optionally with ``start <= ts < end``."""
    return [LedgerEntry.from_record(r) for r in store.list_records(KIND, model, start, end)]


def champion_history(history: Sequence[LedgerEntry]) -> list[str]:
    """The champion versions as a stack: a champion move pushes its new version, a rollback pops back to its target
    (so a second rollback goes further back, never forward again)."""
    stack: list[str] = []
    for e in history:
        if e.alias != CHAMPION or e.new_version is None:
            continue
        if e.event == ROLLBACK:
            while stack and stack[-1] != e.new_version:
                stack.pop()
            if not stack:
                stack.append(e.new_version)
        elif e.event == ALIAS_MOVE and (not stack or stack[-1] != e.new_version):
            stack.append(e.new_version)
    return stack


def champion_at(store: Store, model: str, ts: dt.datetime) -> str | None:
    """The version the ledger says held ``champion`` just before ``ts`` (its moves and rollbacks before then), or
    None when it records none: what a backfill of a past day judges against."""
    stack = champion_history(entries(store, model, end=ts))
    return stack[-1] if stack else None


def previous_champion(store: Store, model: str, current: str | None = None) -> str | None:
    """The version a rollback returns ``champion`` to, or None when the ledger knows no earlier one.

    ``current`` is the registry's champion now; when the ledger's last champion differs, someone moved the alias
    outside Evergreen and the ledger cannot say what "previous" means: LedgerError naming both.
    """
    stack = champion_history(entries(store, model))
    if current is not None and stack and stack[-1] != str(current):
        raise LedgerError(f"model '{model}': the registry's champion is version {current} but the ledger's last "
                          f"champion move is to version {stack[-1]}; the alias was moved outside Evergreen. Name the "
                          "version to roll back to explicitly")
    return stack[-2] if len(stack) >= 2 else None


# --- CLI ---------------------------------------------------------------------------------------------------------


def _line(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render(history: Sequence[LedgerEntry]) -> str:
    """A readable table: time, event, alias, previous -> new, outcome, who, reason and report."""
    header = ("ts (UTC)", "event", "alias", "versions", "outcome", "actor", "reason / report")
    rows = [(e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.event, e.alias or "", f"{e.previous_version or '-'} -> "
             f"{e.new_version or '-'}", e.outcome or "", _line(e.actor.describe(), 60),
             _line(e.reason or e.report_summary, 100) + (f" [{e.report_uri}]" if e.report_uri else ""))
            for e in history]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evergreen.promote.ledger --model churn [--store-uri URI] [--json]``: a model's ledger."""
    from evergreen.store import open_store

    parser = argparse.ArgumentParser(prog="python -m evergreen.promote.ledger", description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--store-uri", default=None,
                        help="store URI (default: the evergreen_store Connection, as the DAGs read it; the embedded "
                        "SQLite store in embedded mode)")
    parser.add_argument("--json", action="store_true", help="one JSON object per entry instead of a table")
    args = parser.parse_args(argv)
    if args.store_uri:
        with open_store(args.store_uri) as store:
            history = entries(store, args.model)
    else:  # the DAGs' own store: outside embedded mode a missing Connection is an error that names it, never a guess
        import contextlib

        # what Airflow prints while it loads goes to stderr: stdout is the table (or the JSON lines) alone
        with contextlib.redirect_stdout(sys.stderr):
            from evergreen.hooks.store import StoreHook

            try:
                store = StoreHook().get_conn()
            except Exception as exc:
                parser.error(f"cannot open the evergreen_store Connection: {exc}; pass --store-uri or set "
                             "AIRFLOW_CONN_EVERGREEN_STORE")
            history = entries(store, args.model)
    if args.json:
        for e in history:
            sys.stdout.write(json.dumps({"key": e.key, "ts": e.ts.isoformat(), **e.payload()}, sort_keys=True) + "\n")
    elif not history:
        sys.stdout.write(f"no ledger entries for model '{args.model}'\n")
    else:
        sys.stdout.write(render(history))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
