"""Registry moves: the ``champion`` and ``challenger`` aliases by compare-and-set, and the version status tags.

MLflow keeps one version per alias but has no conditional update, so :func:`move_alias` does compare-and-set by
hand: read the alias, check that it still points where the decision assumed (``expected_version``), set it, and
re-read it. A move that finds the alias elsewhere raises :class:`AliasConflict` and changes nothing; a re-read that
finds someone else's version raises it too, so a lost race is never reported as a win.

Between the check and the set MLflow may answer 5xx (or the connection may drop). Every step is idempotent, so the
move retries the whole read-check-set-re-read, and the read tells which case it was in: the alias still at the
expected version (the set never landed: set it), already at the new version (it landed and the answer was lost:
done), anywhere else (someone moved it meanwhile: :class:`AliasConflict`). Whatever fails, the alias ends at the
expected version or the new one, never at a third.

Read-check-set is atomic only while nobody else writes the alias. Within a process a lock per model serializes the
moves; across processes the promote, A/B and rollback DAGs take one slot of an Airflow pool. Takes an
``MlflowClient`` (the caller resolves the Connection); MLflow is imported inside the functions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from evergreen.promote.report import REJECT
from evergreen.tracking import ALIASES, CHALLENGER, CHAMPION, TAG, aliases

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from evergreen.promote.report import GateReport

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS_TAG = f"{TAG}status"
CANDIDATE = "candidate"
REJECTED = "rejected"
CHALLENGER_STATUS = "challenger"
CHAMPION_STATUS = "champion"
RETIRED = "retired"
STATUSES = (CANDIDATE, REJECTED, CHALLENGER_STATUS, CHAMPION_STATUS, RETIRED)
#: the status a version takes when an alias comes to point at it
ALIAS_STATUS = {CHAMPION: CHAMPION_STATUS, CHALLENGER: CHALLENGER_STATUS}
GATE_OUTCOME_TAG = f"{TAG}gate_outcome"
GATE_SUMMARY_TAG = f"{TAG}gate_summary"
GATE_REPORT_TAG = f"{TAG}gate_report"  # where the full report is (an MLflow artifact URI)
RETRIES = 4
BACKOFF_S = 0.5
_KEEP = object()  # previous_status default: the alias's own rule

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class RegistryError(RuntimeError):
    """A registry move failed; the message names the model, the alias and what to do."""


class AliasConflict(RegistryError):
    """The alias is not where the decision assumed: someone else moved it. Nothing was changed by this move."""

    def __init__(self, model: str, alias: str, expected: str | None, found: str | None, *, after_set: bool) -> None:
        self.model, self.alias, self.expected, self.found = model, alias, expected, found
        if after_set:
            text = (f"alias '{alias}' of model '{model}' points to {_v(found)} right after this move set it to "
                    f"{_v(expected)}: another move overwrote it. Its version stands; re-run the decision on it")
        else:
            text = (f"alias '{alias}' of model '{model}' points to {_v(found)}, not {_v(expected)} as the decision "
                    "assumed: someone else moved it. Nothing was changed; re-run the decision on the current state")
        super().__init__(text)


class RegistryUnavailable(RegistryError):
    """MLflow kept failing with transient errors; the alias is at the expected or the new version."""


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    previous: str | None
    new: str | None  # None: the alias was removed
    changed: bool  # False when the alias already pointed at ``new`` (a retry of a move that had landed)
    attempts: int


def _v(version: str | None) -> str:
    return "no version" if version is None else f"version {version}"


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: MLflow 5xx / 429 answers and dropped or timed-out connections."""
    from mlflow.exceptions import MlflowException
    from requests import exceptions as rx

    if isinstance(exc, MlflowException):
        code = exc.get_http_status_code()
        return code >= 500 or code == 429
    return isinstance(exc, (rx.ConnectionError, rx.Timeout, rx.ChunkedEncodingError))


def _retrying(what: str, fn: Callable[[], T], retries: int, backoff_s: float, sleep: Callable[[float], Any]) -> T:
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == retries:
                raise RegistryUnavailable(f"{what}: MLflow failed {retries + 1} times ({exc}); retry later") from exc
            log.warning("%s: transient MLflow error (%s); retry %d of %d", what, exc, attempt + 1, retries)
            sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _lock(model: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(model, threading.Lock())


def move_alias(
    client: MlflowClient,
    model: str,
    alias: str,
    new_version: str | int | None,
    expected_version: str | int | None,
    *,
    previous_status: str | None | object = _KEEP,
    retries: int = RETRIES,
    backoff_s: float = BACKOFF_S,
    sleep: Callable[[float], Any] = time.sleep,
) -> AliasMove:
    """Point ``alias`` of ``model`` at ``new_version`` (None removes it) if it still points at ``expected_version``
    (None: no version), then set the status tags.

    The new version's status becomes the alias's (``champion`` / ``challenger``); the previous version's becomes
    ``previous_status``: by default ``retired`` for a champion move and unchanged for a challenger move (the caller
    says ``rejected`` when a test stops, nothing when the challenger became champion). Raises
    :class:`AliasConflict` when the alias was moved by someone else, :class:`RegistryUnavailable` when MLflow kept
    failing (then the alias is at ``expected_version`` or ``new_version``: re-running the move settles it).
    """
    if alias not in ALIASES:
        raise ValueError(f"alias '{alias}' is not one the platform moves; use one of {', '.join(ALIASES)}")
    new = None if new_version is None else str(new_version)
    expected = None if expected_version is None else str(expected_version)
    what = f"moving alias '{alias}' of model '{model}' from {_v(expected)} to {_v(new)}"
    state = {"attempts": 0, "set": False}

    def attempt() -> bool:
        state["attempts"] += 1
        current = aliases(client, model).get(alias)
        if current == new:  # a set whose answer was lost landed, or a retried task finds its own move
            return state["set"]
        if current != expected:
            raise AliasConflict(model, alias, expected, current, after_set=False)
        state["set"] = True
        if new is None:
            client.delete_registered_model_alias(model, alias)
        else:
            client.set_registered_model_alias(model, alias, new)
        after = aliases(client, model).get(alias)
        if after != new:
            raise AliasConflict(model, alias, new, after, after_set=True)
        return True

    with _lock(model):
        changed = _retrying(what, attempt, retries, backoff_s, sleep)
        result = AliasMove(model, alias, expected, new, changed, state["attempts"])
        log.info("%s: %s", what, "done" if changed else "already done")
        if previous_status is _KEEP:
            previous_status = RETIRED if alias == CHAMPION else None
        if expected is not None and expected != new and previous_status is not None:
            set_status(client, model, expected, str(previous_status), retries=retries, backoff_s=backoff_s,
                       sleep=sleep)
        if new is not None:
            set_status(client, model, new, ALIAS_STATUS[alias], retries=retries, backoff_s=backoff_s, sleep=sleep)
    return result


def set_status(client: MlflowClient, model: str, version: str | int, status: str, *, retries: int = RETRIES,
               backoff_s: float = BACKOFF_S, sleep: Callable[[float], Any] = time.sleep) -> None:
    """Set the ``evergreen.status`` tag of a version (one of :data:`STATUSES`)."""
    if status not in STATUSES:
        raise ValueError(f"status '{status}' is not allowed; use one of {', '.join(STATUSES)}")
    _retrying(f"tagging version {version} of model '{model}' {status}",
              lambda: client.set_model_version_tag(model, str(version), STATUS_TAG, status), retries, backoff_s, sleep)


def tag_gate_report(client: MlflowClient, model: str, version: str | int, report: GateReport, report_uri: str, *,
                    retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                    sleep: Callable[[float], Any] = time.sleep) -> None:
    """Record the gate's outcome on the version: outcome, one-line summary, where the full report is; a rejected
    candidate's status becomes ``rejected`` (the other statuses follow the aliases)."""
    tags = {GATE_OUTCOME_TAG: report.outcome, GATE_SUMMARY_TAG: report.summary, GATE_REPORT_TAG: report_uri}
    for key, value in tags.items():
        _retrying(f"tagging version {version} of model '{model}' with {key}",
                  lambda k=key, v=value: client.set_model_version_tag(model, str(version), k, v), retries, backoff_s,
                  sleep)
    if report.outcome == REJECT:
        set_status(client, model, version, REJECTED, retries=retries, backoff_s=backoff_s, sleep=sleep)


__all__ = ["AliasConflict", "AliasMove", "CHALLENGER", "CHAMPION", "RegistryError", "RegistryUnavailable",
           "STATUSES", "STATUS_TAG", "clear_alias", "is_transient", "move_alias", "set_status", "tag_gate_report"]


def clear_alias(client: MlflowClient, model: str, alias: str, expected_version: str | int, *,
                status: str | None = None, retries: int = RETRIES, backoff_s: float = BACKOFF_S,
                sleep: Callable[[float], Any] = time.sleep) -> AliasMove:
    """Remove ``alias`` of ``model`` if it still points at ``expected_version`` (a compare-and-set delete, with
    :func:`move_alias`'s retries and :class:`AliasConflict`), then tag that version ``status`` (``rejected`` or
    ``retired`` when an A/B test stops; None leaves its status, e.g. a challenger that just became champion)."""
    if expected_version is None:
        raise ValueError(f"clear_alias of '{alias}' of model '{model}' needs the version it is expected to point at")
    return move_alias(client, model, alias, None, expected_version, previous_status=status, retries=retries,
                      backoff_s=backoff_s, sleep=sleep)
