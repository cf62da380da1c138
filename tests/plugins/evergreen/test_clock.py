"""The platform's clock: the wall clock (or a run's time) by default; the demo's simulated clock file only in embedded
mode, where every process reading it agrees on the time; a bad or misplaced clock is an error that names it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from evergreen import clock

UTC = dt.timezone.utc


@pytest.fixture
def clock_file(tmp_path, monkeypatch):
    path = tmp_path / "clock"
    monkeypatch.setenv(clock.CLOCK_ENV, str(path))
    monkeypatch.setenv("EVERGREEN_EMBEDDED", "1")
    return path


def test_without_the_variable_it_is_the_wall_clock_or_the_given_time(monkeypatch):
    monkeypatch.delenv(clock.CLOCK_ENV, raising=False)
    before = dt.datetime.now(UTC)
    assert before <= clock.now() <= dt.datetime.now(UTC)
    run_after = dt.datetime(2026, 11, 3, 4, 0, tzinfo=UTC)
    assert clock.now(run_after) == run_after
    assert not clock.simulated()


def test_the_simulated_clock_is_the_files_time_and_follows_it(clock_file):
    clock.set_simulated(clock_file, dt.datetime(2026, 10, 5, 1, 0, tzinfo=UTC))
    assert clock.simulated()
    run_after = dt.datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    first = clock.now(run_after)  # the file wins over the run's time
    assert dt.timedelta(0) <= first - dt.datetime(2026, 10, 5, 1, 0, tzinfo=UTC) < dt.timedelta(seconds=5)
    assert clock.now() > first, "the simulated clock runs on: entries written one after another keep their order"
    later = dt.datetime(2026, 10, 6, 0, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    clock.set_simulated(clock_file, later)
    assert dt.timedelta(0) <= clock.now() - later < dt.timedelta(seconds=5)
    assert clock.now().tzinfo == UTC


def test_the_simulated_clock_outside_embedded_mode_is_refused(clock_file, monkeypatch):
    clock.set_simulated(clock_file, dt.datetime(2026, 10, 5, tzinfo=UTC))
    monkeypatch.delenv("EVERGREEN_EMBEDDED")
    with pytest.raises(clock.ClockError, match="EVERGREEN_SIMULATED_CLOCK is set but EVERGREEN_EMBEDDED is not"):
        clock.now()


@pytest.mark.parametrize(("text", "message"), [("2026-10-05T01:00:00", "has no time zone"),
                                              ("yesterday", "is not an ISO-8601 time")])
def test_a_bad_clock_file_names_the_problem(clock_file, text, message):
    clock_file.write_text(text)
    with pytest.raises(clock.ClockError, match=message):
        clock.now()


def test_a_missing_clock_file_says_how_to_go_back_to_the_wall_clock(clock_file):
    with pytest.raises(clock.ClockError, match="unset the variable to use the wall clock"):
        clock.now()


def test_a_naive_time_is_never_written():
    with pytest.raises(ValueError, match="time zone"):
        clock.set_simulated(Path("/nonexistent/clock"), dt.datetime(2026, 10, 5))
