"""The production stack on paper, validated: docker-compose.yaml renders with Debian's `docker-compose config` only
when every credential is in the env file (and names the one missing), no service holds a literal secret, each service
gets only its own credentials (MLflow with authentication and a non-admin platform user, MongoDB through an
application user of the evergreen database, every published port on the loopback), the Airflow Connections it
builds resolve through the project's hooks outside embedded mode, every Airflow option, CLI command, MLflow server
flag and Prometheus flag it uses exists in the pinned versions, Prometheus scrapes the scoring app with a config that
`promtool` accepts, the runbook's compose override for an S3 lake renders, the MLflow user set-up script works
against a real basic-auth server, and the Dockerfile matches requirements.txt. Known default credentials in any file
of the stack: tests/test_no_default_credentials.py.

`docker-compose` and `promtool` (Debian packages docker-compose and prometheus) are installed by the Makefile's test
setup when running as root; elsewhere these tests skip unless CI=true, where a missing binary is a failure.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
OPERATIONS = REPO / "docs" / "operations.md"
BIN = Path(sys.executable).parent
SERVICES = {
    "postgres",
    "mongo",
    "mlflow",
    "mlflow-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "serving-churn",
    "prometheus",
}
AIRFLOW_SERVICES = {s for s in SERVICES if s.startswith("airflow-")}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY\b|_KEY_ID\b")
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[?-])?([^}]*)\}")  # $${X} is the container's own variable
REFERENCE_REQUIRED = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+):?\?")


def _references() -> dict[str, str]:
    """Variable -> how the compose file reads it: ':?' (required, non-empty), '?' (must be set), ':-' (optional)."""
    refs: dict[str, str] = {}
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    for name, op, _ in REFERENCE.findall(text):
        refs.setdefault(name, op)
        assert refs[name] == op, f"{name} is read both as {refs[name]!r} and {op!r}"
    return refs


REQUIRED = sorted(n for n, op in _references().items() if op in (":?", "?"))


def _complete_env() -> dict[str, str]:
    """A full test env: every required variable, secrets random and URL-safe, the Kubeflow host set."""
    env = {}
    for name in REQUIRED:
        env[name] = f"test-{name.lower()}-{secrets.token_hex(4)}" if SECRET_NAME.search(name) else name.lower()
    env["KUBEFLOW_HOST"] = "https://kfp.example.org"
    env["KUBEFLOW_MODE"] = "remote"
    return env


def _write_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


def _debian_tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        message = f"{name} is not installed (Debian: apt-get install -y {package}; `make test` does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


@pytest.fixture(scope="module")
def docker_compose() -> str:
    return _debian_tool("docker-compose", "docker-compose")


def compose_config(exe: str, env_file: Path) -> subprocess.CompletedProcess:
    # --env-file replaces the project's .env, so a developer's own .env cannot leak into the test; the process
    # environment is stripped of everything but what the binary needs, for the same reason.
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [exe, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=clean,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered(docker_compose, tmp_path_factory) -> tuple[dict, dict[str, str]]:
    env = _complete_env()
    env_file = _write_env(tmp_path_factory.mktemp("compose") / "test.env", env)
    proc = compose_config(docker_compose, env_file)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout), env


# --- refuses to start without its credentials ---------------------------------------------------------------


def test_without_an_env_file_compose_refuses_and_names_a_variable(docker_compose, tmp_path):
    proc = compose_config(docker_compose, _write_env(tmp_path / "empty.env", {}))
    assert proc.returncode != 0
    named = [name for name in REQUIRED if f"{name} is required" in proc.stderr or f"{name} must be set" in proc.stderr]
    assert named, proc.stderr
    assert "set it in .env" in proc.stderr or "must be set in .env" in proc.stderr


@pytest.mark.parametrize("missing", REQUIRED)
def test_each_missing_variable_is_named(docker_compose, tmp_path, missing):
    env = {k: v for k, v in _complete_env().items() if k != missing}
    proc = compose_config(docker_compose, _write_env(tmp_path / "partial.env", env))
    assert proc.returncode != 0, f"compose rendered without {missing}"
    assert missing in proc.stderr.splitlines()[-1], proc.stderr


@pytest.mark.parametrize("empty", [n for n, op in _references().items() if op == ":?"])
def test_an_empty_secret_is_refused_like_a_missing_one(docker_compose, tmp_path, empty):
    env = {**_complete_env(), empty: ""}
    proc = compose_config(docker_compose, _write_env(tmp_path / "blank.env", env))
    assert proc.returncode != 0 and empty in proc.stderr.splitlines()[-1], proc.stderr


def test_env_example_holds_no_secret_and_does_not_start_as_is(docker_compose):
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    secret_values = {k: v for k, v in values.items() if SECRET_NAME.search(k)}
    assert secret_values and all(v == "" for v in secret_values.values()), secret_values
    # Copying the example unedited must not start a stack with guessable credentials.
    proc = compose_config(docker_compose, ENV_EXAMPLE)
    assert proc.returncode != 0 and "is required: set it in .env" in proc.stderr


def test_env_example_documents_every_variable_the_stack_reads():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert sorted(set(_references()) - documented) == []


# --- renders to the intended stack ----------------------------------------------------------------------------


def test_complete_env_renders_the_whole_stack(rendered):
    config, env = rendered
    services = config["services"]
    assert set(services) == SERVICES
    airflow_db = f"postgresql+psycopg2://airflow:{env['AIRFLOW_DB_PASSWORD']}@postgres:5432/airflow"
    for name in AIRFLOW_SERVICES:
        service_env = services[name]["environment"]
        assert service_env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert service_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == airflow_db, name
        # One value for every process, or tokens and encrypted connection fields do not survive between them.
        assert service_env["AIRFLOW__CORE__FERNET_KEY"] == env["AIRFLOW_FERNET_KEY"], name
        assert service_env["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW_JWT_SECRET"], name
        assert service_env["EVERGREEN_LAKE_URI"] and service_env["EVERGREEN_LANDING_URI"], name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        if name != "airflow-init":
            assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert {services[s]["command"][0] for s in AIRFLOW_SERVICES} == {
        "pools", "api-server", "scheduler", "dag-processor", "triggerer"
    }
    # the init creates the one-slot pool every registry move runs in (a task in a missing pool never runs)
    assert services["airflow-init"]["command"][:4] == ["pools", "set", "evergreen_registry", "1"]
    init_env = services["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_PASSWORD"] == env["AIRFLOW_ADMIN_PASSWORD"]
    # Two databases, one role each: Airflow's metadata and MLflow's backend store.
    pg_env = services["postgres"]["environment"]
    assert pg_env["AIRFLOW_DB_PASSWORD"] == env["AIRFLOW_DB_PASSWORD"]
    assert pg_env["MLFLOW_DB_PASSWORD"] == env["MLFLOW_DB_PASSWORD"]
    mlflow = services["mlflow"]
    # the database password reaches MLflow through libpq's PGPASSWORD, not its command line (visible in `ps`)
    assert "--backend-store-uri=postgresql+psycopg2://mlflow@postgres:5432/mlflow" in mlflow["command"]
    assert mlflow["environment"]["PGPASSWORD"] == env["MLFLOW_DB_PASSWORD"]
    assert not any(env["MLFLOW_DB_PASSWORD"] in arg for arg in mlflow["command"])
    assert services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_ROOT_PASSWORD"]


def test_postgres_init_script_is_mounted_and_executable(rendered):
    config, _ = rendered
    mounts = [v for v in config["services"]["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert len(mounts) == 1
    source = Path(str(mounts[0]).split(":")[0])
    assert source.is_file() and os.access(source, os.X_OK), source
    script = source.read_text()
    assert "CREATE DATABASE airflow" in script and "CREATE DATABASE mlflow" in script
    assert ":'airflow_password'" in script and ":'mlflow_password'" in script  # psql quotes the secrets
    assert "CREATE DATABASE mlflow_auth OWNER mlflow" in script  # MLflow's users, apart from its tracking data


@pytest.fixture
def production(monkeypatch):
    """As in the containers: no embedded mode, so a Connection the stack does not define is an error."""
    monkeypatch.delenv("EVERGREEN_EMBEDDED", raising=False)
    for key in list(os.environ):
        if key.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(key)


def test_connections_resolve_through_the_project_hooks(rendered, monkeypatch, production):
    from airflow.sdk import BaseHook

    from evergreen.hooks.kubeflow import KubeflowHook
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook

    config, env = rendered
    scheduler_env = config["services"]["airflow-scheduler"]["environment"]
    assert "EVERGREEN_EMBEDDED" not in scheduler_env
    for key, value in scheduler_env.items():
        if key.startswith("AIRFLOW_CONN_"):
            json.loads(value)  # JSON form: secrets need no URL-encoding in .env
            monkeypatch.setenv(key, value)
    # the application user of the evergreen database, never MongoDB's root
    assert StoreHook().uri == (f"mongodb://{env['MONGO_APP_USER']}:{env['MONGO_APP_PASSWORD']}@mongo:27017/evergreen"
                               "?authSource=evergreen")
    # the platform's own MLflow user, never the admin
    mlflow_conn = BaseHook.get_connection("mlflow_default")
    assert (mlflow_conn.login, mlflow_conn.password) == (env["MLFLOW_PLATFORM_USER"], env["MLFLOW_PLATFORM_PASSWORD"])
    assert mlflow_conn.login != env["MLFLOW_ADMIN_USER"]
    tracking = urllib.parse.urlsplit(MlflowHook().tracking_uri)
    assert (tracking.scheme, tracking.hostname, tracking.port) == ("http", "mlflow", 5000)
    kubeflow = KubeflowHook()
    assert kubeflow.host == "https://kfp.example.org" and not kubeflow.is_local
    assert kubeflow.namespace == "kubeflow"


def test_kubeflow_mode_local_with_an_empty_host_is_the_local_runner(docker_compose, tmp_path, monkeypatch, production):
    from evergreen.hooks.kubeflow import KubeflowHook

    env = {**_complete_env(), "KUBEFLOW_MODE": "local", "KUBEFLOW_HOST": "", "KUBEFLOW_TOKEN": ""}
    proc = compose_config(docker_compose, _write_env(tmp_path / "local.env", env))
    assert proc.returncode == 0, proc.stderr
    conn = yaml.safe_load(proc.stdout)["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KUBEFLOW_DEFAULT"]
    monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", conn)
    assert KubeflowHook().is_local


def test_an_empty_kubeflow_host_without_mode_local_is_refused(docker_compose, tmp_path, monkeypatch, production):
    from airflow.sdk.exceptions import AirflowConfigException

    from evergreen.hooks.kubeflow import KubeflowHook

    env = {**_complete_env(), "KUBEFLOW_HOST": "", "KUBEFLOW_TOKEN": ""}  # mode remote
    proc = compose_config(docker_compose, _write_env(tmp_path / "remote.env", env))
    assert proc.returncode == 0, proc.stderr
    conn = yaml.safe_load(proc.stdout)["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KUBEFLOW_DEFAULT"]
    monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", conn)
    with pytest.raises(AirflowConfigException, match="mode 'remote' but no host"):
        KubeflowHook().is_local


# --- least privilege: each credential reaches only its own service ---------------------------------------------


def _holders(config: dict, value: str) -> set[str]:
    """The services whose environment or command holds ``value``."""
    return {name for name, service in config["services"].items()
            if value in json.dumps([service.get("environment"), service.get("command"), service.get("entrypoint")])}


def test_root_and_admin_credentials_reach_only_their_own_services(rendered):
    config, env = rendered
    assert _holders(config, env["POSTGRES_PASSWORD"]) == {"postgres"}
    assert _holders(config, env["MONGO_ROOT_PASSWORD"]) == {"mongo"}
    assert _holders(config, env["MLFLOW_ADMIN_PASSWORD"]) == {"mlflow", "mlflow-init"}
    assert _holders(config, env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == {"mlflow"}
    assert _holders(config, env["MLFLOW_DB_PASSWORD"]) == {"postgres", "mlflow"}
    # what the platform signs in with: its own users
    # (the scoring app reads the registry and writes predictions to the store as the platform)
    assert _holders(config, env["MLFLOW_PLATFORM_PASSWORD"]) == AIRFLOW_SERVICES | {"mlflow-init", "serving-churn"}
    assert _holders(config, env["MONGO_APP_PASSWORD"]) == AIRFLOW_SERVICES | {"mongo", "serving-churn"}
    # Prometheus scrapes an unauthenticated /metrics: it holds no credential at all
    assert not any("prometheus" in _holders(config, v) for k, v in env.items() if SECRET_NAME.search(k))
    assert not config["services"]["prometheus"].get("environment")


def _port(spec) -> tuple[str, str, str]:
    """(host ip, published port, target port) of a rendered port: compose v1 prints "ip:published:target/proto",
    v2 a mapping."""
    if isinstance(spec, dict):
        return str(spec.get("host_ip") or ""), str(spec.get("published")), str(spec.get("target"))
    parts = str(spec).split("/", 1)[0].split(":")
    return ("", *parts) if len(parts) == 2 else tuple(parts)  # type: ignore[return-value]


def test_published_ports_are_on_the_loopback_unless_a_bind_variable_says_otherwise(rendered, docker_compose, tmp_path):
    config, _ = rendered
    ports = {name: [_port(p) for p in service.get("ports") or []] for name, service in config["services"].items()
             if service.get("ports")}
    assert ports == {"airflow-apiserver": [("127.0.0.1", "8080", "8080")], "mlflow": [("127.0.0.1", "5000", "5000")],
                     "serving-churn": [("127.0.0.1", "8000", "8000")], "prometheus": [("127.0.0.1", "9090", "9090")]}
    env = {**_complete_env(), "AIRFLOW_BIND": "0.0.0.0", "AIRFLOW_PORT": "9090",
           "PROMETHEUS_BIND": "10.0.0.5", "PROMETHEUS_PORT": "19090"}
    proc = compose_config(docker_compose, _write_env(tmp_path / "bind.env", env))
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    (api,) = services["airflow-apiserver"]["ports"]
    assert _port(api) == ("0.0.0.0", "9090", "8080")
    (prom,) = services["prometheus"]["ports"]
    assert _port(prom) == ("10.0.0.5", "19090", "9090")
    (serving,) = services["serving-churn"]["ports"]
    assert _port(serving) == ("127.0.0.1", "8000", "8000")  # one service's bind never moves another's


def test_mlflow_runs_with_authentication(rendered):
    config, env = rendered
    mlflow = config["services"]["mlflow"]
    command = mlflow["command"]
    assert "--app-name=basic-auth" in command
    (hosts,) = [a.split("=", 1)[1] for a in command if a.startswith("--allowed-hosts=")]
    assert "mlflow:5000" in hosts.split(",") and "*" not in hosts
    menv = mlflow["environment"]
    assert menv["MLFLOW_AUTH_ADMIN_USERNAME"] == env["MLFLOW_ADMIN_USER"]
    assert menv["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_ADMIN_PASSWORD"]
    assert menv["MLFLOW_FLASK_SERVER_SECRET_KEY"] == env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in mlflow["volumes"] if str(v).startswith(("/", "."))}
    ini = Path(mounts[menv["MLFLOW_AUTH_CONFIG_PATH"]])
    assert ini.is_file(), ini


def test_mlflow_auth_config_is_read_by_the_pinned_mlflow_and_holds_no_secret(rendered, monkeypatch):
    config, env = rendered
    menv = config["services"]["mlflow"]["environment"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in config["services"]["mlflow"]["volumes"]
              if str(v).startswith(("/", "."))}
    ini = Path(mounts[menv["MLFLOW_AUTH_CONFIG_PATH"]])
    for key in ("MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.setenv(key, str(ini) if key == "MLFLOW_AUTH_CONFIG_PATH" else menv[key])
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.permissions import get_permission

    auth = read_auth_config()
    get_permission(auth.default_permission)  # a permission the pinned MLflow knows
    assert auth.default_permission != "MANAGE"
    assert (auth.admin_username, auth.admin_password) == (env["MLFLOW_ADMIN_USER"], env["MLFLOW_ADMIN_PASSWORD"])
    db = urllib.parse.urlsplit(auth.database_uri)
    assert (db.hostname, db.path, db.username, db.password) == ("postgres", "/mlflow_auth", "mlflow", None)
    assert "admin_password" not in re.sub(r"(?m)^#.*$", "", ini.read_text())


def test_mlflow_init_creates_the_platform_user_before_the_scheduler_starts(rendered):
    config, env = rendered
    init = config["services"]["mlflow-init"]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert config["services"]["airflow-scheduler"]["depends_on"]["mlflow-init"]["condition"] == (
        "service_completed_successfully")
    ienv = init["environment"]
    assert (ienv["MLFLOW_TRACKING_USERNAME"], ienv["EVERGREEN_MLFLOW_USER"]) == (
        env["MLFLOW_ADMIN_USER"], env["MLFLOW_PLATFORM_USER"])
    script = Path(str(init["volumes"][0]).split(":")[0])
    assert script.is_file() and init["entrypoint"][-1] == str(init["volumes"][0]).split(":")[1]


def test_mongo_init_script_creates_an_application_user_of_the_evergreen_database_only(rendered):
    config, env = rendered
    mongo = config["services"]["mongo"]
    (mount,) = [v for v in mongo["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    source = Path(str(mount).split(":")[0])
    assert source.suffix == ".js" and source.is_file()
    script = source.read_text()
    assert 'getSiblingDB("evergreen")' in script
    (roles,) = re.findall(r"roles:\s*\[(.*?)\]", script, flags=re.S)
    assert re.sub(r"\s", "", roles) == '{role:"readWrite",db:"evergreen"}'
    assert "process.env.MONGO_APP_USER" in script and "process.env.MONGO_APP_PASSWORD" in script
    assert (mongo["environment"]["MONGO_APP_USER"], mongo["environment"]["MONGO_APP_PASSWORD"]) == (
        env["MONGO_APP_USER"], env["MONGO_APP_PASSWORD"])
    assert env["MONGO_APP_USER"] != env["MONGO_ROOT_USER"]


# --- no literal secrets ---------------------------------------------------------------------------------------


def literal_secrets(compose_text: str) -> list[str]:
    """Places in the compose file where a secret is written out instead of read from the env file."""
    doc = yaml.safe_load(compose_text)
    found = []

    def strings(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from strings(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from strings(v, f"{path}[{i}]")
        elif node is not None:
            yield path, str(node)

    for name, service in doc["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, value in env.items():
            if SECRET_NAME.search(key):
                m = REFERENCE.fullmatch(str(value))
                # A secret is a reference that is required, or optional with an empty default; nothing else.
                if not m or (m.group(2) == ":-" and m.group(3) != ""):
                    found.append(f"{name}.environment.{key}")
        for path, text in strings(service, name):
            for password in re.findall(r"://[^:/@\s\"']+:(\$\{[^}]*\}|[^@\"'\n]+)@", text):
                if not REFERENCE.fullmatch(password):
                    found.append(f"{path}: URI password {password!r}")
            for password in re.findall(r'"(?:password|token|secret)"\s*:\s*"([^"]*)"', text, flags=re.I):
                if password and not REFERENCE.fullmatch(password):
                    found.append(f"{path}: JSON password {password!r}")
    return found


def test_no_service_holds_a_literal_secret():
    assert literal_secrets(COMPOSE.read_text()) == []


def test_literal_secret_check_catches_each_form():
    text = COMPOSE.read_text()
    uri = re.sub(r"airflow:\$\{AIRFLOW_DB_PASSWORD:\?[^}]*\}@", "airflow:hunter2@", text, count=1)
    assert any("URI password 'hunter2'" in f for f in literal_secrets(uri))
    plain = re.sub(r'MONGO_INITDB_ROOT_PASSWORD: "\$\{[^}]*\}"', 'MONGO_INITDB_ROOT_PASSWORD: "hunter2"', text)
    assert "mongo.environment.MONGO_INITDB_ROOT_PASSWORD" in literal_secrets(plain)
    default = text.replace("${POSTGRES_PASSWORD:?", "${POSTGRES_PASSWORD:-hunter2}${X:?", 1)
    assert "postgres.environment.POSTGRES_PASSWORD" in literal_secrets(default)
    conn = re.sub(r'"password": "\$\{MONGO_APP_PASSWORD:\?[^}]*\}"', '"password": "hunter2"', text)
    assert any("JSON password 'hunter2'" in f for f in literal_secrets(conn))


# --- what the stack runs exists in the pinned versions -----------------------------------------------------


def test_airflow_options_and_commands_exist_in_the_pinned_airflow(rendered, tmp_path):
    config, _ = rendered
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow")
    proc = subprocess.run(
        [str(BIN / "airflow"), "config", "list", "--defaults"], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    options, section = set(), None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^#?\s?(\w+) = ", line):
            options.add((section, m.group(1)))
    used = set()
    for name in AIRFLOW_SERVICES:
        for key in config["services"][name]["environment"]:
            if m := re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", key):
                used.add((m.group(1).lower(), m.group(2).lower()))
    assert used and sorted(used - options) == []

    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name in AIRFLOW_SERVICES:
        service = config["services"][name]
        parser.parse_args(service["command"])  # SystemExit on an unknown command or flag
        test = (service.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD-SHELL"] and test[1].startswith("airflow "):
            args = shlex.split(test[1].replace("$${HOSTNAME}", "host").replace("${HOSTNAME}", "host"))[1:]
            parser.parse_args(args)


def test_mlflow_server_flags_exist_in_the_pinned_mlflow(rendered):
    config, _ = rendered
    service = config["services"]["mlflow"]
    assert service["entrypoint"] == ["mlflow"] and service["command"][0] == "server"
    proc = subprocess.run([str(BIN / "mlflow"), "server", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    flags = {arg.split("=", 1)[0] for arg in service["command"][1:]}
    missing = sorted(f for f in flags if not re.search(rf"(^|\s|/){re.escape(f)}\b", proc.stdout, flags=re.M))
    assert missing == []


# --- the image ------------------------------------------------------------------------------------------------


def _dockerignore() -> list[str]:
    return [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_builds_on_the_pinned_airflow_and_copies_what_exists():
    dockerfile = (REPO / "Dockerfile").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "requirements.txt").read_text(), flags=re.M))
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert base == f"apache/airflow:{pins['apache-airflow']}-python3.11"
    assert re.search(r"pip install .*-r /opt/evergreen/requirements.txt", dockerfile)
    patterns = _dockerignore()
    sources = []
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, flags=re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        sources += args[:-1]
    assert {"requirements.txt", "plugins/", "dags/", "include/", "pyproject.toml"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), f"{source} is excluded by .dockerignore"
    # Local state and secrets never enter the build context.
    for private in (".env", ".venv", ".evergreen", ".git"):
        assert _ignored(private, patterns), private
    assert not _ignored(".env.example", patterns)


def test_nothing_in_the_stack_switches_on_embedded_mode(rendered):
    config, _ = rendered
    for name, service in config["services"].items():
        assert "EVERGREEN_EMBEDDED" not in (service.get("environment") or {}), name
    assert "EVERGREEN_EMBEDDED" not in re.sub(r"(?m)^#.*$", "", (REPO / "Dockerfile").read_text())


def test_the_image_has_what_mlflows_basic_auth_app_needs(rendered):
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    config, _ = rendered
    assert config["services"]["mlflow"]["build"]["context"] in (str(REPO), ".")  # the MLflow server runs our image
    pins = {canonicalize_name(n): v for n, v in
            re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (REPO / "requirements.txt").read_text(), flags=re.M)}
    auth = [Requirement(r) for r in importlib.metadata.requires("mlflow") or []]
    auth = [r for r in auth
            if r.marker is not None and "extra" in str(r.marker) and r.marker.evaluate({"extra": "auth"})]
    assert auth, "mlflow declares no 'auth' extra"
    for req in auth:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (mlflow[auth]) is not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} does not satisfy {req}"
    assert re.search(r"pip install .*-r /opt/evergreen/requirements.txt", (REPO / "Dockerfile").read_text())


# --- metrics: Prometheus scrapes the scoring app ----------------------------------------------------------------

PROMETHEUS_IMAGE = re.compile(r"prom/prometheus:v(\d+\.\d+\.\d+)")


def _volumes(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume: compose v1 renders "source:target[:mode]", v2 a mapping."""
    out = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out.append((str(volume.get("source")), str(volume["target"]), bool(volume.get("read_only"))))
        else:
            parts = str(volume).split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


@pytest.fixture(scope="module")
def prometheus(rendered) -> tuple[dict, Path, dict]:
    """(the service, the host path of its config file, the parsed config)."""
    config, _ = rendered
    service = config["services"]["prometheus"]
    flags = dict(arg.split("=", 1) for arg in service["command"])
    mounts = {target: (source, read_only) for source, target, read_only in _volumes(service)}
    source, read_only = mounts[flags["--config.file"]]
    assert read_only, f"{source} is mounted writable"
    path = Path(source)
    assert path == REPO / "deploy" / "prometheus" / "prometheus.yml", path
    return service, path, yaml.safe_load(path.read_text())


def test_prometheus_image_is_pinned_and_keeps_its_data_on_a_named_volume(rendered, prometheus):
    config, _ = rendered
    service, _, _ = prometheus
    assert PROMETHEUS_IMAGE.fullmatch(service["image"]), f"{service['image']}: pin an exact vX.Y.Z tag"
    flags = dict(arg.split("=", 1) for arg in service["command"])
    data = {target: source for source, target, _ in _volumes(service)}[flags["--storage.tsdb.path"]]
    assert data == "prometheus-data" or data.endswith("_prometheus-data"), data
    assert "prometheus-data" in config["volumes"]


def test_prometheus_scrapes_the_serving_service_on_its_container_port(rendered, prometheus):
    config, _ = rendered
    _, _, scrape = prometheus
    targets = [(job["job_name"], job.get("metrics_path", "/metrics"), target)
               for job in scrape["scrape_configs"] for static in job.get("static_configs") or []
               for target in static["targets"]]
    assert targets == [("serving-churn", "/metrics", "serving-churn:8000")]
    serving = config["services"]["serving-churn"]
    command = serving["command"]
    port = command[command.index("--port") + 1]
    assert f"serving-churn:{port}" == targets[0][2]  # the port the app listens on, not the one published
    assert [_port(p)[2] for p in serving["ports"]] == [port]
    app = (REPO / "plugins" / "evergreen" / "serve" / "app.py").read_text()
    assert '@app.get("/metrics")' in app  # the path the scoring app serves its metrics at


def test_prometheus_config_passes_promtool_of_the_version_the_image_runs(prometheus):
    service, path, _ = prometheus
    promtool = _debian_tool("promtool", "prometheus")
    proc = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = subprocess.run([promtool, "--version"], capture_output=True, text=True, timeout=60)
    (checked,) = re.findall(r"promtool, version (\d+\.\d+\.\d+)", version.stdout + version.stderr)
    (runs,) = PROMETHEUS_IMAGE.fullmatch(service["image"]).groups()
    assert runs == checked, f"the config is checked by promtool {checked} but the image runs Prometheus {runs}"


def test_prometheus_flags_exist_in_that_version(prometheus):
    service, _, _ = prometheus
    exe = _debian_tool("prometheus", "prometheus")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    help_text = proc.stdout + proc.stderr
    flags = {arg.split("=", 1)[0] for arg in service["command"]}
    assert sorted(f for f in flags if not re.search(rf"^\s+{re.escape(f)}[=\s]", help_text, flags=re.M)) == []


# --- the runbook's compose override for a lake on S3 -----------------------------------------------------------


def _runbook_override() -> str:
    """The docker-compose.override.yaml of docs/operations.md (the yaml block that starts with its name)."""
    blocks = re.findall(r"^```yaml\n(# docker-compose\.override\.yaml.*?)^```", OPERATIONS.read_text(),
                        flags=re.M | re.S)
    assert len(blocks) == 1, "docs/operations.md: expected one yaml block starting '# docker-compose.override.yaml'"
    return blocks[0]


def test_the_runbooks_s3_lake_override_renders_and_reaches_only_the_scheduler(docker_compose, tmp_path):
    override = tmp_path / "docker-compose.override.yaml"
    override.write_text(_runbook_override())
    text = "\n".join(line for line in override.read_text().splitlines() if not line.lstrip().startswith("#"))
    names = sorted(set(REFERENCE_REQUIRED.findall(text)))
    assert names, "the override reads its values from .env"
    # required, never optional: an empty AWS_DEFAULT_REGION (what `${X:-}` gives) makes botocore build an invalid
    # endpoint, and an empty key pair silently means "no credentials"
    assert sorted({name for name, op, _ in REFERENCE.findall(text)}) == names, "every value of the override is :?"
    lake = {n: (f"s3://bucket/{n.lower()}" if n.endswith("_URI") else f"test-{n.lower()}") for n in names}
    env = {**_complete_env(), **lake}
    clean = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}

    def render(values: dict[str, str]) -> subprocess.CompletedProcess:
        env_file = _write_env(tmp_path / "lake.env", values)
        return subprocess.run([docker_compose, "--env-file", str(env_file), "-f", str(COMPOSE), "-f", str(override),
                               "config"], capture_output=True, text=True, env=clean, cwd=REPO, timeout=120)

    proc = render(env)
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    secret = [n for n in names if SECRET_NAME.search(n)]
    assert secret, "the override carries the S3 credentials"
    for name in secret:
        holders = {s for s, svc in services.items() if env[name] in json.dumps(svc.get("environment"))}
        assert holders == {"airflow-scheduler"}, (name, holders)  # LocalExecutor: tasks run in the scheduler
    scheduler = services["airflow-scheduler"]["environment"]
    assert scheduler["EVERGREEN_LAKE_URI"].startswith("s3://")
    assert scheduler["EVERGREEN_LANDING_URI"].startswith("s3://")
    for name in secret:
        missing = render({k: v for k, v in env.items() if k != name})
        assert missing.returncode != 0 and name in missing.stderr, missing.stderr


# --- the MLflow user set-up, for real ------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_platform_user_script_against_a_real_basic_auth_server(tmp_path):
    """deploy/mlflow/create_platform_user.py against `mlflow server --app-name basic-auth` with our auth config
    (its user database on SQLite here): a plain user that can work but not administer, set again on a re-run."""
    import requests

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ini = tmp_path / "auth.ini"
    # our config with the user database on SQLite, and credential checks cached (one worker: a password change
    # invalidates at once), since every request otherwise pays a PBKDF2 hash
    config = re.sub(r"(?m)^database_uri = .*$", f"database_uri = sqlite:///{tmp_path / 'auth.db'}",
                    (REPO / "deploy" / "mlflow" / "basic_auth.ini").read_text())
    ini.write_text(config + "auth_cache_ttl_seconds = 60\n")
    admin, admin_pw = "mlflow-admin", secrets.token_hex(12)
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    server_env = {**base, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": admin,
                  "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name=basic-auth", "--host=127.0.0.1", f"--port={port}", "--workers=1",
         f"--backend-store-uri=sqlite:///{tmp_path / 'mlflow.db'}", "--serve-artifacts",
         f"--artifacts-destination={tmp_path / 'artifacts'}", f"--allowed-hosts=127.0.0.1:{port}"],
        cwd=tmp_path, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def setup(user: str, password: str) -> subprocess.CompletedProcess:
        env = {**base, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": admin,
               "MLFLOW_TRACKING_PASSWORD": admin_pw, "EVERGREEN_MLFLOW_USER": user,
               "EVERGREEN_MLFLOW_PASSWORD": password}
        return subprocess.run([sys.executable, str(REPO / "deploy" / "mlflow" / "create_platform_user.py")],
                              capture_output=True, text=True, env=env, timeout=300)

    def is_admin(user: str) -> bool:
        resp = requests.get(f"{url}/api/2.0/mlflow/users/get", params={"username": user}, auth=(admin, admin_pw))
        resp.raise_for_status()
        return resp.json()["user"]["is_admin"]

    try:
        first = setup("evergreen", "first-password-1")  # waits for the server's /health itself
        assert first.returncode == 0, first.stderr + (tmp_path / "server.log").read_text()[-3000:]
        assert "created MLflow user 'evergreen'" in first.stdout
        assert not is_admin("evergreen")

        search = f"{url}/api/2.0/mlflow/experiments/search"
        assert requests.get(search, params={"max_results": 1}).status_code == 401  # no user, no data
        created = requests.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": "evergreen/churn/monitoring"},
                                auth=("evergreen", "first-password-1"))
        assert created.status_code == 200, created.text
        denied = requests.post(f"{url}/api/2.0/mlflow/users/create", json={"username": "x", "password": "y-pw-1234"},
                               auth=("evergreen", "first-password-1"))
        assert denied.status_code == 403, denied.text

        # a re-run sets the password from .env again and takes admin rights away
        requests.patch(f"{url}/api/2.0/mlflow/users/update-admin", json={"username": "evergreen", "is_admin": True},
                       auth=(admin, admin_pw)).raise_for_status()
        again = setup("evergreen", "second-password-2")
        assert again.returncode == 0, again.stderr
        assert "password set again" in again.stdout and "admin rights removed" in again.stdout
        assert not is_admin("evergreen")
        old, new = ("evergreen", "first-password-1"), ("evergreen", "second-password-2")
        assert requests.get(search, params={"max_results": 1}, auth=old).status_code == 401
        assert requests.get(search, params={"max_results": 1}, auth=new).status_code == 200

        same = setup(admin, "whatever-password-3")
        assert same.returncode != 0 and "is the MLflow admin" in same.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
