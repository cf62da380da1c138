"""Ground-truth ingestion without Airflow, the run as a whole (evergreen.ingest.tasks): idempotency -- ten re-runs,
SIGKILL of ``python -m evergreen.ingest`` at each write stage and at random points followed by a retry, and
order-independent corrections -- the command line, and the state digest the checks compare.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ingest_env import DAY, MODEL, NEXT, Env, land_mixed_days, logged_day, make_env, outcome_csv_frame

from evergreen import lake
from evergreen.ingest import tasks
from evergreen.store.sql import SqlStore


# --- idempotency -------------------------------------------------------------------------------------------------


def test_ten_reruns_leave_identical_store_and_lake(env):
    days = land_mixed_days(env)
    env.run(DAY, NEXT + dt.timedelta(days=1))
    first = env.digest(days)
    assert first["store/outcomes"]["rows"] > 0 and first["lake/quarantine/dt=2026-11-03/part-0.parquet"]["rows"] == 8
    assert first["lake/quarantine-files/dt=2026-11-03/d.csv.gz"]["bytes"] == len(b"an upload cut short")
    for _ in range(9):
        # mix the interval's shapes: one two-day run, then day by day in either order
        env.run(DAY, NEXT + dt.timedelta(days=1))
        assert env.digest(days) == first
    env.run(NEXT)
    env.run(DAY)
    assert env.digest(days) == first


def test_a_later_correction_wins_whatever_order_days_are_run_in(env):
    d = logged_day(env, 4)
    original = outcome_csv_frame(d)
    correction = original.iloc[[0]].copy()
    correction[MODEL.label.name] = 1 - correction[MODEL.label.name]
    correction[MODEL.timestamp] = "2026-11-04T12:00:00Z"  # the correction is known later
    env.land(DAY, "o.csv", original)
    env.land(NEXT, "fix.csv", correction)
    rid = correction[MODEL.request_id].iloc[0]

    def stored_label() -> int:
        out = env.store.read_outcomes(MODEL.name)
        return int(out.set_index("request_id").loc[rid, "label"])

    env.run(DAY)
    env.run(NEXT)
    assert stored_label() == correction[MODEL.label.name].iloc[0]
    state = env.digest([DAY, NEXT])
    env.run(DAY)  # a backfill of the older day must not revert the correction
    assert stored_label() == correction[MODEL.label.name].iloc[0]
    assert env.digest([DAY, NEXT]) == state

    other = make_env(env.root.parent / "reversed")  # the same files ingested in the opposite order
    for day, name in ((DAY, "o.csv"), (NEXT, "fix.csv")):
        src = Path(lake.landing_dir("churn", day, env.landing)) / name
        other.land(day, name, raw=src.read_bytes())
    logged_day(other, 4)
    other.run(NEXT)
    other.run(DAY)
    reversed_state = other.digest([DAY, NEXT])
    for key in ("store/outcomes", "lake/labelled/dt=2026-11-03/part-0.parquet",
                "lake/labelled/dt=2026-11-04/part-0.parquet"):  # (records and quarantine name their own paths)
        assert reversed_state[key] == state[key], key


def _cli(env: Env, day: dt.date, pause: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", day.isoformat(),
           "--end", (day + dt.timedelta(days=2)).isoformat(), "--store-uri", env.store_uri,
           "--landing-root", env.landing, "--lake-root", env.lake]
    child_env = {k: v for k, v in os.environ.items() if k != tasks.PAUSE_ENV}
    if pause:
        child_env[tasks.PAUSE_ENV] = pause
    return subprocess.Popen(cmd, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ingestion exited ({proc.returncode}) before pausing: {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "ingestion never reached its pause point"
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


CRASH_ROWS = 10_000


@pytest.fixture(scope="module")
def crash_inputs(tmp_path_factory):
    """Landed files and logged predictions for the crash tests, the state a clean run of the interval leaves, and
    a copy of the store as it was before ingestion (each test restarts from it, in the same folders so the paths
    in records and quarantine rows match)."""
    import shutil

    env = make_env(tmp_path_factory.mktemp("crash"))
    days = land_mixed_days(env, n=CRASH_ROWS)
    env.store.close()
    shutil.copy(env.root / "store.db", env.root / "pristine.db")  # closed: the WAL is checkpointed into the file
    env.store = SqlStore(env.store.uri)
    env.run(DAY, NEXT + dt.timedelta(days=1))
    clean = env.digest(days)
    env.store.close()
    return env, days, clean


@pytest.fixture
def crash_env(crash_inputs):
    import shutil

    env, days, clean = crash_inputs
    for leftover in env.root.glob("store.db*"):
        leftover.unlink()
    shutil.copy(env.root / "pristine.db", env.root / "store.db")
    lake.remove(env.lake)
    env.store = SqlStore(env.store.uri)
    assert env.digest(days)["store/outcomes"]["rows"] == 0
    yield env, days, clean
    env.store.close()


READY = "read and validated"  # the CLI's log line once every file is read, before the first write


@pytest.fixture(scope="module")
def cli_write_seconds(tmp_path_factory) -> float:
    """How long a clean ``python -m evergreen.ingest`` run of the crash tests' interval spends after reading
    its files (the stretch with the store and lake writes), measured from its log."""
    env = make_env(tmp_path_factory.mktemp("cli-duration"))
    land_mixed_days(env, n=CRASH_ROWS)
    proc = _cli(env, DAY)
    _wait_for_line(proc, READY)
    started = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert [r["day"] for r in json.loads(out)] == ["2026-11-03", "2026-11-04"]
    env.store.close()
    return time.monotonic() - started


def _wait_for_line(proc: subprocess.Popen, words: str) -> None:
    for line in iter(proc.stderr.readline, ""):
        if words in line:
            return
    raise AssertionError(f"ingestion exited ({proc.wait()}) without logging {words!r}")


def _retry(env: Env) -> None:
    proc = _cli(env, DAY)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


@pytest.mark.parametrize("stage", tasks.STAGES)
def test_sigkill_at_each_write_stage_then_retry_matches_a_clean_run(crash_env, tmp_path, stage):
    env, days, clean = crash_env
    marker = tmp_path / "paused"
    proc = _cli(env, DAY, pause=f"{stage}:{marker}")
    _wait_for(marker, proc)
    _kill(proc)

    crashed = env.digest(days)
    assert crashed != clean
    if stage == "read":  # everything read and validated, nothing written
        assert crashed["store/outcomes"]["rows"] == 0 and not any(k.startswith("lake/") for k in crashed)
    if stage == "store":  # between the store write and the lake write: outcomes stored, no partition, no record
        assert crashed["store/outcomes"]["rows"] > 0
        assert not any(k.startswith("lake/") for k in crashed)
        assert crashed["store/records/ingestion"]["rows"] == 0

    _retry(env)
    assert env.digest(days) == clean


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_point_then_retry_matches_a_clean_run(crash_env, cli_write_seconds, seed):
    env, days, clean = crash_env
    delay = random.Random(seed).uniform(0, cli_write_seconds)
    proc = _cli(env, DAY)
    _wait_for_line(proc, READY)
    time.sleep(delay)
    _kill(proc)
    _retry(env)
    assert env.digest(days) == clean, f"seed {seed}: killed {delay:.2f}s into {cli_write_seconds:.2f}s of writes"


def test_cli_exits_2_naming_a_file_that_cannot_be_fetched(env):
    # Was: garbage bytes exited 2. Now they are quarantined (test_ingest_files.py); an I/O failure still exits 2.
    folder = Path(lake.landing_dir(MODEL.name, DAY, env.landing))
    folder.mkdir(parents=True)
    os.symlink(env.root / "nowhere.parquet", folder / "x.parquet")
    proc = subprocess.run([sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", DAY.isoformat(),
                           "--store-uri", env.store_uri, "--landing-root", env.landing, "--lake-root", env.lake],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "x.parquet cannot be fetched" in proc.stderr


def test_cli_outside_embedded_mode_refuses_to_guess_the_store(env):
    """Production refuses to guess: no --store-uri outside embedded mode is an error naming the flag, and nothing
    is written to the embedded SQLite store (a command pasted from an alert must not land in a local file)."""
    child_env = {k: v for k, v in os.environ.items() if k != "EVERGREEN_EMBEDDED"}
    child_env["EVERGREEN_HOME"] = str(env.root / "guess-home")
    proc = subprocess.run([sys.executable, "-m", "evergreen.ingest", "--model", "churn", "--start", DAY.isoformat(),
                           "--landing-root", env.landing, "--lake-root", env.lake],
                          capture_output=True, text=True, timeout=120, env=child_env)
    assert proc.returncode == 2
    assert "--store-uri is required outside embedded mode" in proc.stderr
    assert not (env.root / "guess-home" / "store.db").exists()


def test_state_digest_sees_a_changed_row():
    a = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    assert tasks.frame_digest(a) == tasks.frame_digest(a.iloc[::-1])  # order does not matter
    assert tasks.frame_digest(a) != tasks.frame_digest(a.assign(y=["a", "c"]))
    assert tasks.frame_digest(a) != tasks.frame_digest(a.astype({"x": "float64"}))
    assert tasks.frame_digest(a)["rows"] == 2 and np.isscalar(tasks.frame_digest(a)["sha256"])
