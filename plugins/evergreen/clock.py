"""The platform's "now": the wall clock, or -- only in embedded mode, for the demo's simulated month -- a clock file.

Every business timestamp the platform writes from the clock goes through :func:`now`: a ledger entry's time, the
serving app's prediction time, an A/B decision's time, the retrain policy's "now" (cooldown, champion age, the
default end of a training window). Airflow's own times (run_after, the scheduler's loops) are never affected.

``make demo`` replays a month of production in minutes. It sets ``EVERGREEN_SIMULATED_CLOCK`` to a file holding one
ISO-8601 time with a zone (``2026-10-05T01:00:00+00:00``) that it advances as the simulated days pass; from the
moment the file is written the clock runs on at wall speed, and every process that reads it (Airflow's task
processes, the scoring app) agrees on the simulated time. The
variable is honoured only in embedded mode (:func:`evergreen.paths.embedded_mode`): anywhere else it is an error
that names it, so a production process can never stamp its records with a file's time.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

from evergreen.paths import EMBEDDED_ENV, embedded_mode

CLOCK_ENV = "EVERGREEN_SIMULATED_CLOCK"


class ClockError(RuntimeError):
    """The simulated clock is set where it is not allowed, or its file is unreadable."""


class _FileClock:
    """The time in a file, re-read when the file changes (one ``stat`` per call otherwise)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._value: dt.datetime | None = None

    def read(self) -> dt.datetime:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ClockError(f"{CLOCK_ENV}={self.path}: cannot read the simulated clock ({exc.strerror}); the demo "
                             "writes it -- unset the variable to use the wall clock") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # every write is a new file (os.replace): a new inode
        with self._lock:
            if key != self._seen or self._value is None:
                text = self.path.read_text().strip()
                try:
                    value = dt.datetime.fromisoformat(text)
                except ValueError:
                    raise ClockError(f"{CLOCK_ENV}={self.path}: {text[:60]!r} is not an ISO-8601 time") from None
                if value.tzinfo is None:
                    raise ClockError(f"{CLOCK_ENV}={self.path}: {text[:60]!r} has no time zone; write it in UTC "
                                     "with +00:00")
                self._value, self._seen = value.astimezone(dt.timezone.utc), key
            # the set time, running on at wall speed since it was written: entries made one after the other
            # (a gate, then its approval, then the alias move) keep their order
            return self._value + dt.timedelta(seconds=max(0.0, time.time() - st.st_mtime_ns / 1e9))


_clock: _FileClock | None = None
_clock_path: str | None = None


def simulated() -> bool:
    """Whether :func:`now` reads the simulated clock (``EVERGREEN_SIMULATED_CLOCK`` set, in embedded mode)."""
    return _file() is not None


def _file() -> _FileClock | None:
    global _clock, _clock_path
    path = os.environ.get(CLOCK_ENV)
    if not path:
        return None
    if not embedded_mode():
        raise ClockError(f"{CLOCK_ENV} is set but {EMBEDDED_ENV} is not: the simulated clock is for the embedded "
                         f"demo only; unset {CLOCK_ENV} in production")
    if _clock is None or _clock_path != path:
        _clock, _clock_path = _FileClock(Path(path)), path
    return _clock


def now(default: dt.datetime | None = None) -> dt.datetime:
    """The current time (UTC): the simulated clock when it is on; else ``default`` when given (a run's
    ``run_after``, say), else the wall clock."""
    clock = _file()
    if clock is not None:
        return clock.read()
    if default is not None:
        return default if default.tzinfo else default.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc)


def set_simulated(path: Path, moment: dt.datetime) -> None:
    """Write ``moment`` to the clock file ``path`` atomically (the demo's side of the clock)."""
    if moment.tzinfo is None:
        raise ValueError("a simulated time needs a time zone")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(moment.astimezone(dt.timezone.utc).isoformat())
    os.replace(tmp, path)
