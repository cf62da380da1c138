"""The production stack on paper, validated: docker-compose.yaml renders with Debian's `docker-compose config` only
when every credential is in the env file (and names the one missing), no service holds a literal secret, the
Airflow Connections it builds resolve through the project's hooks, every Airflow option, CLI command and MLflow
server flag it uses exists in the pinned versions, and the Dockerfile matches requirements.txt.

`docker-compose` (Debian package) is installed by the Makefile's test setup when running as root; elsewhere these
tests skip unless CI=true, where a missing binary is a failure.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
BIN = Path(sys.executable).parent
SERVICES = {
    "postgres",
    "mongo",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
AIRFLOW_SERVICES = {s for s in SERVICES if s.startswith("airflow-")}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY\b|_KEY_ID\b")
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(:?[?-])?([^}]*)\}")  # $${X} is the container's own variable


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
    return env


def _write_env(path: Path, env: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return path


@pytest.fixture(scope="module")
def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "docker-compose is not installed (Debian: apt-get install -y docker-compose; `make test` does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return exe


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
        "version", "api-server", "scheduler", "dag-processor", "triggerer"
    }
    init_env = services["airflow-init"]["environment"]
    assert init_env["_AIRFLOW_DB_MIGRATE"] == "true" and init_env["_AIRFLOW_WWW_USER_PASSWORD"] == env["AIRFLOW_ADMIN_PASSWORD"]
    # Two databases, one role each: Airflow's metadata and MLflow's backend store.
    pg_env = services["postgres"]["environment"]
    assert pg_env["AIRFLOW_DB_PASSWORD"] == env["AIRFLOW_DB_PASSWORD"]
    assert pg_env["MLFLOW_DB_PASSWORD"] == env["MLFLOW_DB_PASSWORD"]
    mlflow_cmd = services["mlflow"]["command"]
    assert f"--backend-store-uri=postgresql+psycopg2://mlflow:{env['MLFLOW_DB_PASSWORD']}@postgres:5432/mlflow" in mlflow_cmd
    assert services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == env["MONGO_PASSWORD"]


def test_postgres_init_script_is_mounted_and_executable(rendered):
    config, _ = rendered
    mounts = [v for v in config["services"]["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert len(mounts) == 1
    source = Path(str(mounts[0]).split(":")[0])
    assert source.is_file() and os.access(source, os.X_OK), source
    script = source.read_text()
    assert "CREATE DATABASE airflow" in script and "CREATE DATABASE mlflow" in script
    assert ":'airflow_password'" in script and ":'mlflow_password'" in script  # psql quotes the secrets


def test_connections_resolve_through_the_project_hooks(rendered, monkeypatch):
    from evergreen.hooks.kubeflow import KubeflowHook
    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.hooks.store import StoreHook

    config, env = rendered
    scheduler_env = config["services"]["airflow-scheduler"]["environment"]
    for key, value in scheduler_env.items():
        if key.startswith("AIRFLOW_CONN_"):
            json.loads(value)  # JSON form: secrets need no URL-encoding in .env
            monkeypatch.setenv(key, value)
    assert StoreHook().uri == f"mongodb://{env['MONGO_USER']}:{env['MONGO_PASSWORD']}@mongo:27017/evergreen?authSource=admin"
    assert MlflowHook().tracking_uri == "http://mlflow:5000"
    kubeflow = KubeflowHook()
    assert kubeflow.host == "https://kfp.example.org" and not kubeflow.is_local
    assert kubeflow.namespace == "kubeflow"


def test_empty_kubeflow_host_means_the_local_runner(docker_compose, tmp_path, monkeypatch):
    from evergreen.hooks.kubeflow import KubeflowHook

    env = {**_complete_env(), "KUBEFLOW_HOST": "", "KUBEFLOW_TOKEN": ""}
    proc = compose_config(docker_compose, _write_env(tmp_path / "local.env", env))
    assert proc.returncode == 0, proc.stderr
    conn = yaml.safe_load(proc.stdout)["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KUBEFLOW_DEFAULT"]
    monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_DEFAULT", conn)
    assert KubeflowHook().is_local


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
    conn = re.sub(r'"password": "\$\{MONGO_PASSWORD:\?[^}]*\}"', '"password": "hunter2"', text)
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
