"""The embedded Airflow environment: every key exists in Airflow 3.3 under its current name, Airflow reads our
values, the 2-core tuning is below Airflow's defaults, and ``make airflow`` really serves the project's DAGs."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from evergreen.airflow_env import airflow_env

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# The options that size the embedded Airflow for a 2-core machine, and which way is "lighter" for each.
TUNING = {
    ("core", "parallelism"): "lower",
    ("core", "max_active_tasks_per_dag"): "lower",
    ("core", "max_active_runs_per_dag"): "lower",
    ("dag_processor", "parsing_processes"): "lower",
    ("dag_processor", "min_file_process_interval"): "higher",
    ("dag_processor", "dag_file_processor_timeout"): None,
    ("dag_processor", "refresh_interval"): None,
}


def _clean_env(home: Path) -> dict[str, str]:
    """This machine's environment without the test session's Airflow/Evergreen settings, home at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EVERGREEN_"))}
    env["EVERGREEN_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def embedded_env(tmp_path, monkeypatch) -> dict[str, str]:
    """``airflow_env()`` as ``make airflow`` computes it: no overrides, a fresh home."""
    for key in list(os.environ):
        if key.startswith(("AIRFLOW", "EVERGREEN_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EVERGREEN_HOME", str(tmp_path / "home"))
    return airflow_env()


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], capture_output=True, text=True, env=env, timeout=300)


def _options(text: str) -> dict[tuple[str, str], str]:
    """(section, option) -> value from ``airflow config list --show-values`` output (commented or not)."""
    options, section = {}, None
    for line in text.splitlines():
        if m := re.match(r"^\[(\w+)\]\s*$", line):
            section = m.group(1)
        elif section and (m := re.match(r"^#?\s?(\w+) = (.*)$", line)):
            options.setdefault((section, m.group(1)), m.group(2).strip())
    return options


@pytest.fixture(scope="module")
def airflow_defaults(tmp_path_factory) -> dict[tuple[str, str], str]:
    home = tmp_path_factory.mktemp("defaults")
    env = {**_clean_env(home), "AIRFLOW_HOME": str(home / "airflow")}
    proc = _airflow(["config", "list", "--defaults", "--show-values"], env)
    assert proc.returncode == 0, proc.stderr
    defaults = _options(proc.stdout)
    assert ("core", "parallelism") in defaults, proc.stdout[:2000]
    return defaults


def _airflow_keys(env: dict[str, str]) -> dict[tuple[str, str], str]:
    keys = {}
    for key, value in env.items():
        if m := re.match(r"^AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)$", key):
            keys[(m.group(1).lower(), m.group(2).lower())] = value
    return keys


def test_every_key_names_a_current_airflow_3_3_option(embedded_env, airflow_defaults):
    # An env var for a moved or removed option is either ignored or read with a deprecation warning; only the
    # names Airflow 3.3 lists under --defaults are current.
    keys = _airflow_keys(embedded_env)
    assert set(TUNING) <= set(keys)
    unknown = sorted(f"{s}.{o}" for s, o in keys if (s, o) not in airflow_defaults)
    assert unknown == [], f"not options of Airflow 3.3: {unknown}"


def test_airflow_config_get_value_returns_our_values_without_warnings(embedded_env):
    keys = _airflow_keys(embedded_env)
    env = {**_clean_env(Path(embedded_env["EVERGREEN_HOME"])), **embedded_env}
    # Each CLI start costs seconds: the two sizing options, and the one whose old [core] name used to warn.
    for section, option in [
        ("core", "parallelism"),
        ("dag_processor", "parsing_processes"),
        ("dag_processor", "dag_file_processor_timeout"),
    ]:
        proc = _airflow(["config", "get-value", section, option], env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == keys[(section, option)], (section, option, proc.stdout)
        assert "deprecat" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


def test_every_value_is_what_airflow_reads(embedded_env):
    # One `config list` covers the remaining keys (paths, executor, database) in a single Airflow start.
    env = {**_clean_env(Path(embedded_env["EVERGREEN_HOME"])), **embedded_env}
    proc = _airflow(["config", "list", "--show-values"], env)
    assert proc.returncode == 0, proc.stderr
    assert "deprecat" not in (proc.stdout + proc.stderr).lower(), proc.stderr
    effective = _options(proc.stdout)
    for (section, option), value in _airflow_keys(embedded_env).items():
        assert effective.get((section, option)) == value, (section, option)


def test_tuning_is_lighter_than_airflow_defaults(embedded_env, airflow_defaults):
    keys = _airflow_keys(embedded_env)
    for (section, option), direction in TUNING.items():
        ours, default = float(keys[(section, option)]), float(airflow_defaults[(section, option)])
        if direction == "lower":
            assert ours < default, f"{section}.{option}={ours} is not below Airflow's default {default}"
        elif direction == "higher":
            assert ours > default, f"{section}.{option}={ours} is not above Airflow's default {default}"
    # One parsing process: the other core stays with the scheduler and the tasks.
    assert keys[("dag_processor", "parsing_processes")] == "1"


def test_all_state_lives_under_evergreen_home(embedded_env):
    home = Path(embedded_env["EVERGREEN_HOME"])
    assert Path(embedded_env["AIRFLOW_HOME"]).is_relative_to(home)
    assert embedded_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow' / 'airflow.db'}"
    assert embedded_env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert embedded_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(REPO / "plugins")
    assert embedded_env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_values_set_by_the_user_win(embedded_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "8")
    monkeypatch.setenv("EVERGREEN_HOME", "/srv/evergreen")
    env = airflow_env()
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"
    assert env["AIRFLOW_HOME"] == "/srv/evergreen/airflow"
    assert env["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "1"


def test_shell_exports_survive_a_home_with_spaces(tmp_path, monkeypatch):
    # `make airflow` evals these lines; a home with spaces (or quotes) must reach Airflow unchanged.
    home = tmp_path / "my 'home'"
    for key in list(os.environ):
        if key.startswith(("AIRFLOW", "EVERGREEN_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EVERGREEN_HOME", str(home))
    expected = airflow_env()
    script = f'eval "$({shlex.quote(sys.executable)} -m evergreen.airflow_env)" && env -0'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=_clean_env(home), timeout=120)
    assert proc.returncode == 0, proc.stderr
    exported = dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)
    assert {k: exported.get(k) for k in expected} == expected
    assert exported["AIRFLOW_HOME"] == str(home / "airflow")


def test_embedded_mode_is_on_where_airflow_env_is_used(embedded_env):
    # make airflow, make demo (evergreen_demo puts airflow_env() in its environment) and the tests
    assert embedded_env["EVERGREEN_EMBEDDED"] == "1"


def test_a_process_without_airflow_env_refuses_to_guess_the_store(tmp_path):
    home = tmp_path / "home"
    env = {**_clean_env(home), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    code = "from evergreen.hooks.store import StoreHook; print(StoreHook().get_conn())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "AirflowConfigException" in proc.stderr and "AIRFLOW_CONN_EVERGREEN_STORE=" in proc.stderr, proc.stderr
    assert not (home / "store.db").exists()
    # the same process with the embedded environment opens the embedded store
    env["EVERGREEN_EMBEDDED"] = airflow_env()["EVERGREEN_EMBEDDED"]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (home / "store.db").exists()


# --- make airflow, for real -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None, data: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as resp:
        return json.loads(resp.read())


def _expected_dag_ids() -> set[str]:
    from airflow.dag_processing.dagbag import DagBag

    return set(DagBag(str(REPO / "dags")).dags)


@pytest.mark.slow
def test_make_airflow_serves_the_project_dags(tmp_path):
    """`make airflow` starts `airflow standalone` on a fresh home; its API lists every DAG of dags/."""
    expected = _expected_dag_ids()
    port = _free_port()
    env = {**_clean_env(tmp_path / "home"), "AIRFLOW__API__PORT": str(port)}
    log = (tmp_path / "standalone.log").open("w")
    # -o: never reinstall the venv from inside a test; the recipe is what is being checked.
    proc = subprocess.Popen(
        ["make", "-s", "-o", ".venv/.installed", "airflow"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        deadline = started + 150
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _get(f"{base}/api/v2/monitor/health")
                if all(health[c]["status"] == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(2)
        assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
        assert health, "the API server never answered"

        passwords = tmp_path / "home" / "airflow" / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())["admin"]
        token = _get(f"{base}/auth/token", data={"username": "admin", "password": password})["access_token"]

        listed: set[str] = set()
        while time.monotonic() < deadline:
            listed = {d["dag_id"] for d in _get(f"{base}/api/v2/dags?limit=100", token)["dags"]}
            if expected <= listed:
                break
            time.sleep(2)
        errors = _get(f"{base}/api/v2/importErrors", token)
        assert errors["total_entries"] == 0, errors
        assert expected <= listed, f"missing from the API: {sorted(expected - listed)}"
        print(f"standalone served {len(listed)} DAGs after {time.monotonic() - started:.0f} s")
    finally:
        # Ctrl-C, as a user stops it: standalone stops its components on KeyboardInterrupt.
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is still running (a LocalExecutor worker can linger) goes too: nothing of the group survives.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=20)
        log.close()
