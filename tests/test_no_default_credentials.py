"""No default credential and no placeholder secret in what a user deploys: docker-compose.yaml, the Dockerfile,
.env.example and every file under deploy/ (Kubernetes manifests, the MLflow auth ini, init scripts, the Prometheus
config).

Someone who copies the stack and fills in only what it refuses to start without must not end up with a guessable
credential. Each rule below is one way a default gets in; a finding names the file, the line and the rule.

* ``known-default``: a value that is a default credential wherever it stands (MLflow's old ``password1234``,
  MinIO's ``minioadmin``, ``changeme``), comments included: a commented line is one a user uncomments;
* ``weak-value``: a secret-looking name (PASSWORD, SECRET, TOKEN, KEY, ...) given a well-known default:
  ``airflow``, ``admin``, ``postgres``, mongo's ``example``, ``password``, ``secret``, ...;
* ``same-as-user``: a secret equal to a user name set in the same file (``airflow``/``airflow``, ``admin``/``admin``);
* ``placeholder``: a secret-looking name given a stand-in a user might leave in (``<password>``, ``your-token``,
  ``xxx``, ``replace-me``, ``todo``);
* ``var-default``: ``${VAR:-value}`` / ``${VAR-value}`` / ``${VAR:=value}`` with a value, for a secret-looking VAR
  (compose and shell syntax); an empty default (optional, nothing set) is not a credential;
* ``code-default``: a secret read from the environment with a fallback value in a script (Python
  ``os.environ.get("X_PASSWORD", "...")``, ``os.getenv``, ``setdefault``; JavaScript ``process.env.X || "..."``);
* ``uri-password``: a password written into a URI (``scheme://user:password@host``) instead of a variable;
* ``env-example-value``: a secret-looking variable of .env.example, commented or not, that is not empty;
* ``dockerfile-secret``: an ``ENV`` or ``ARG`` of the Dockerfile with a secret-looking name (baked into the image
  or its history);
* ``ini-secret``: a secret-looking key of an ini file with a value;
* ``k8s-literal-secret``: a container env var of a manifest with a secret-looking name (or an ``AIRFLOW_CONN_*``,
  which carries a login and password) that is not ``valueFrom.secretKeyRef``;
* ``k8s-secret-object``: a Secret (or a ConfigMap holding a secret-looking key) committed as a manifest.

User names (``AIRFLOW_ADMIN_USER=admin``, ``POSTGRES_USER=postgres`` in .env.example) are not credentials: every
password they pair with is required, non-empty and has no default (tests/test_compose.py proves compose refuses to
start without each one, and that no compose service holds a literal secret).

The rules must fail when a default comes in: ``test_each_rule_catches_its_bad_example`` feeds every rule lines that
break it, ``test_lines_that_look_close_pass`` feeds it the forms the stack legitimately uses, and
``test_every_rule_has_a_bad_example`` keeps the two lists honest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STACK_FILES = sorted(
    [REPO / "docker-compose.yaml", REPO / ".env.example", REPO / "Dockerfile",
     *(p for p in (REPO / "deploy").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
)

RULES = ("known-default", "weak-value", "same-as-user", "placeholder", "var-default", "code-default", "uri-password",
         "env-example-value", "dockerfile-secret", "ini-secret", "k8s-literal-secret", "k8s-secret-object")

# A name that holds a secret: PASSWORD, PASSWD, SECRET, TOKEN, CREDENTIAL anywhere (PGPASSWORD, MLFLOW_AUTH_TOKEN);
# KEY, PWD, PASS as a word of it (FERNET_KEY, AWS_ACCESS_KEY_ID, pwd; not MONKEY or KEYCLOAK_URL).
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|(?:^|[_.\-])(?:KEY|PWD|PASS)(?:[_.\-]|ID\b|$)")
USER_NAME = re.compile(r"(?:^|[_.\-])(?:USER|USERNAME|LOGIN)$")
ALWAYS_A_DEFAULT = re.compile(r"(?<![A-Za-z0-9])(password1234|minioadmin|change[_\-]?me|changeit)(?![A-Za-z0-9])", re.I)
# The passwords that ship with the images and quick-starts this stack is built from (Airflow's compose file:
# airflow/airflow; MLflow's basic-auth ini: admin/password1234; the mongo image's example: root/example, mongo-express:
# admin/pass; MinIO: minioadmin; PostgreSQL quick-starts: postgres/postgres), and their usual stand-ins.
KNOWN_DEFAULTS = {
    "airflow", "admin", "administrator", "password", "passwd", "pass", "password1", "password123", "password1234",
    "secret", "changeme", "changeit", "postgres", "postgresql", "mongo", "mongoadmin", "root", "toor", "example",
    "mlflow", "minioadmin", "minio123", "evergreen", "test", "testing", "default", "guest", "letmein", "qwerty",
    "123456", "12345678", "hunter2",
}
PLACEHOLDER = re.compile(
    r"<[^>]*>|\[[^\]]*]|x{3,}|\*{3,}|\.{3,}|(?:your|my)[\w\-]*|(?:replace|change|fill|set)[_\-]?(?:me|this|it)[\w\-]*"
    r"|todo|fixme|tbd|placeholder|dummy|insecure[\w\-]*|sample[\w\-]*|generate[\w\- ]*",
    re.I,
)
# key: value / key=value / "key": "value" / --key=value / key = value (ini), found at every word start (a lookahead),
# so `--from-literal=password=x` yields both `from-literal` and `password`. A quoted value runs to its closing quote;
# an unquoted one ends at a blank, a comma, a semicolon or a closing bracket.
ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?=(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)[\"']?\s*[:=]\s*"
    r"(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<bare>[^\"'\s,;}\]]*)))"
)
CODE_SUFFIXES = (".py", ".js", ".mjs", ".ts")  # where an unquoted value is a variable, not a literal
VAR_DEFAULT = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-=])(?P<default>[^}]*)}")
URI_PASSWORD = re.compile(r"://(?P<user>[^:/@\s\"'{}]+):(?P<password>\$\{[^}]*}|[^@\s\"'/]+)@")
CODE_DEFAULT = re.compile(
    r"(?:environ\.get|getenv|environ\.setdefault)\(\s*[\"'](?P<var>[^\"']+)[\"']\s*,\s*[\"'](?P<default>[^\"']+)[\"']"
    r"|process\.env\.(?P<jsvar>\w+)\s*(?:\|\||\?\?)\s*[\"'`](?P<jsdefault>[^\"'`]+)[\"'`]"
)
ENV_LINE = re.compile(r"^\s*#?\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class Finding:
    rule: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.rule}] {self.what}"


def secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name.upper()))


def is_reference(value: str) -> bool:
    """A value read from elsewhere: ${VAR...}, $VAR, or a template the deploy tooling fills in."""
    return value.startswith("$") or value.startswith("{{")


def _comment(line: str) -> bool:
    return line.lstrip().startswith(("#", "//", ";", "--"))


def _line_findings(name: str, text: str) -> list[Finding]:
    found: list[Finding] = []
    users: set[str] = set()
    secrets_seen: list[tuple[str, str, str]] = []  # (where, key, value)
    code = Path(name).name.endswith(CODE_SUFFIXES)
    for n, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{n}"
        comment = _comment(line)
        if m := ALWAYS_A_DEFAULT.search(line):
            found.append(Finding("known-default", where, repr(m.group(1))))
        for m in ASSIGNMENT.finditer(line):
            key = m.group("key")
            quoted = m.group("bare") is None
            value = m.group("dq") if m.group("dq") is not None else m.group("sq") if quoted else m.group("bare")
            if (not value or is_reference(value) or (not quoted and code)
                    or (not quoted and re.search(r"[()\[]", value))):  # an expression, not a literal
                continue
            if USER_NAME.search(key.upper()):
                users.add(value.lower())
            if not secret_name(key):
                continue
            secrets_seen.append((where, key, value))
            if value.lower() in KNOWN_DEFAULTS:
                found.append(Finding("weak-value", where, f"{key}={value!r}"))
            elif not comment and PLACEHOLDER.fullmatch(value):
                found.append(Finding("placeholder", where, f"{key}={value!r}"))
        for m in VAR_DEFAULT.finditer(line):
            if secret_name(m.group("var")) and m.group("default").strip():
                found.append(Finding("var-default", where,
                                     f"${{{m.group('var')}{m.group('op')}...}} defaults to {m.group('default')!r}"))
        for m in CODE_DEFAULT.finditer(line):
            var, default = (m.group("var"), m.group("default")) if m.group("var") else (m.group("jsvar"),
                                                                                       m.group("jsdefault"))
            if secret_name(var):
                found.append(Finding("code-default", where, f"{var} falls back to {default!r}"))
        for m in URI_PASSWORD.finditer(line):
            if not is_reference(m.group("password")):
                found.append(Finding("uri-password", where, f"URI {m.group('user')}:{m.group('password')}@"))
    for where, key, value in secrets_seen:
        if value.lower() in users:
            found.append(Finding("same-as-user", where, f"{key}={value!r} is also a user name in {name}"))
    return found


def _env_file_findings(name: str, text: str) -> list[Finding]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        if (m := ENV_LINE.match(line)) and secret_name(m.group("key")) and m.group("value").strip():
            found.append(Finding("env-example-value", f"{name}:{n}",
                                 f"{m.group('key')} is not empty: a user copying the file keeps it"))
    return found


def _dockerfile_findings(name: str, text: str) -> list[Finding]:
    found = []
    joined = re.sub(r"\\\n", " ", text)  # continuation lines belong to their instruction
    for n, line in enumerate(joined.splitlines(), 1):
        m = re.match(r"^\s*(ENV|ARG)\s+(.*)$", line, flags=re.I)
        if not m:
            continue
        words = m.group(2).split()
        names = [w.split("=", 1)[0] for w in words if "=" in w] or words[:1]  # ENV A=1 B=2 | ENV A 1 | ARG A
        for var in names:
            if secret_name(var):
                found.append(Finding("dockerfile-secret", f"{name}:{n}",
                                     f"{m.group(1).upper()} {var}: the image and its history would carry it"))
    return found


def _ini_findings(name: str, text: str) -> list[Finding]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*[=:]\s*(\S.*)$", line)
        if m and not _comment(line) and secret_name(m.group(1)) and not is_reference(m.group(2).strip()):
            found.append(Finding("ini-secret", f"{name}:{n}", f"{m.group(1)} has a value in the file"))
    return found


def _env_lists(node):
    """Every ``env:`` list of a manifest (containers, init containers, PodDefaults, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield value
            else:
                yield from _env_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_lists(item)


def _manifest_findings(name: str, text: str) -> list[Finding]:
    found = []
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        return found
    for doc in docs:
        if "apiVersion" not in doc or "kind" not in doc:
            continue  # not a Kubernetes object (compose, Prometheus)
        title = f"{doc['kind']} {(doc.get('metadata') or {}).get('name', '?')}"
        if doc["kind"] == "Secret":
            found.append(Finding("k8s-secret-object", f"{name}: {title}",
                                 "a Secret's values in a committed file; create it with kubectl from your own values"))
        if doc["kind"] == "ConfigMap":
            for key in {**(doc.get("data") or {}), **(doc.get("binaryData") or {})}:
                if secret_name(key):
                    found.append(Finding("k8s-secret-object", f"{name}: {title}", f"ConfigMap key {key}"))
        for env in _env_lists(doc):
            for var in env:
                if not isinstance(var, dict) or "name" not in var:
                    continue
                var_name = str(var["name"])
                if not (secret_name(var_name) or var_name.startswith("AIRFLOW_CONN_")):
                    continue
                ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
                if "value" in var or not (ref.get("name") and ref.get("key")):
                    given = "a literal value" if "value" in var else sorted(var.get("valueFrom") or {})
                    found.append(Finding("k8s-literal-secret", f"{name}: {title}",
                                         f"env {var_name} must be valueFrom.secretKeyRef (name and key), not {given}"))
    return found


def findings(name: str, text: str) -> list[Finding]:
    """Every default credential or placeholder secret in a stack file called ``name`` holding ``text``."""
    base = Path(name).name
    found = _line_findings(name, text)
    if base.startswith(".env"):
        found += _env_file_findings(name, text)
    if base == "Dockerfile" or base.endswith(".Dockerfile"):
        found += _dockerfile_findings(name, text)
    if base.endswith((".ini", ".cfg", ".conf")):
        found += _ini_findings(name, text)
    if base.endswith((".yaml", ".yml")):
        found += _manifest_findings(name, text)
    return found


# --- the stack as it is -----------------------------------------------------------------------------------------


def test_the_scan_covers_every_file_of_the_stack():
    names = {str(p.relative_to(REPO)) for p in STACK_FILES}
    assert names >= {
        "docker-compose.yaml", ".env.example", "Dockerfile", "deploy/k8s/serving-churn.yaml",
        "deploy/mlflow/basic_auth.ini", "deploy/mlflow/create_platform_user.py", "deploy/mongo/create-app-user.js",
        "deploy/postgres/init-databases.sh", "deploy/prometheus/prometheus.yml",
    }, names
    # every file is text the rules can read (a binary file here would be skipped silently otherwise)
    for path in STACK_FILES:
        path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", STACK_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_stack_file_holds_a_default_credential(path):
    found = findings(str(path.relative_to(REPO)), path.read_text())
    assert [str(f) for f in found] == []


def test_the_manifests_secrets_come_from_secrets():
    """Positive form of k8s-literal-secret: the serving manifest reads its Connections from a Secret (and so the
    rule has something to check in the files as they are)."""
    manifest = REPO / "deploy" / "k8s" / "serving-churn.yaml"
    refs = [var for doc in yaml.safe_load_all(manifest.read_text()) if doc for env in _env_lists(doc) for var in env
            if var["name"].startswith("AIRFLOW_CONN_")]
    assert {v["name"] for v in refs} == {"AIRFLOW_CONN_EVERGREEN_STORE", "AIRFLOW_CONN_MLFLOW_DEFAULT"}
    assert all(v["valueFrom"]["secretKeyRef"]["name"] for v in refs)


# --- the rules catch what they are for ---------------------------------------------------------------------------

BAD = [
    # known defaults, wherever they stand
    ("known-default", "deploy/mlflow/basic_auth.ini", "admin_password = password1234"),
    ("known-default", ".env.example", "# MINIO_ROOT_PASSWORD=minioadmin"),
    ("known-default", "docker-compose.yaml", '      SOME_SETTING: "changeme"'),
    # Airflow's compose quick-start, MLflow's ini, mongo's example, PostgreSQL quick-starts
    ("weak-value", "docker-compose.yaml", "      _AIRFLOW_WWW_USER_PASSWORD: airflow"),
    ("weak-value", "docker-compose.yaml", "      - POSTGRES_PASSWORD=postgres"),
    ("weak-value", "docker-compose.yaml", "      MONGO_INITDB_ROOT_PASSWORD: example"),
    ("weak-value", "deploy/mongo/create-app-user.js", '  pwd: "admin",'),
    ("weak-value", "deploy/k8s/x.yaml", "#   kubectl create secret generic s --from-literal=password=secret"),
    ("weak-value", "deploy/x.json", '{"login": "evergreen", "password": "password"}'),
    ("weak-value", "deploy/x.sh", "export MLFLOW_TRACKING_TOKEN=secret"),
    ("same-as-user", "deploy/x.env", "APP_USER=ops-team\nAPP_PASSWORD=ops-team"),
    ("placeholder", "docker-compose.yaml", '      AIRFLOW__CORE__FERNET_KEY: "<generate one>"'),
    ("placeholder", "deploy/x.sh", "MONGO_APP_PASSWORD=your-password-here"),
    ("placeholder", "deploy/x.py", 'token = "xxxxxxxx"'),
    ("var-default", "docker-compose.yaml", '      POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:-hunter3}"'),
    ("var-default", "docker-compose.yaml", "      AWS_SECRET_ACCESS_KEY: ${MLFLOW_S3_SECRET_ACCESS_KEY-minio123}"),
    ("var-default", "deploy/postgres/init-databases.sh", ': "${AIRFLOW_DB_PASSWORD:=hunter3}"'),
    ("var-default", "docker-compose.yaml", "      AIRFLOW__CORE__FERNET_KEY: ${AIRFLOW_FERNET_KEY:-ZmVybmV0}"),
    ("code-default", "deploy/mlflow/create_platform_user.py",
     'password = os.environ.get("EVERGREEN_MLFLOW_PASSWORD", "s3cr3t-pw")'),
    ("code-default", "deploy/x.py", 'os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", "s3cr3t-pw")'),
    ("code-default", "deploy/mongo/create-app-user.js",
     'const appPassword = process.env.MONGO_APP_PASSWORD || "s3cr3t";'),
    ("uri-password", "docker-compose.yaml",
     '    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: "postgresql+psycopg2://airflow:airflow@postgres/airflow"'),
    ("uri-password", "deploy/x.json", '"extra": {"uri": "mongodb://root:Zq8-unique@mongo:27017"}'),
    ("uri-password", "deploy/mlflow/basic_auth.ini", "database_uri = postgresql://mlflow:s3cr3t@postgres/mlflow_auth"),
    ("env-example-value", ".env.example", "AIRFLOW_ADMIN_PASSWORD=Zq8-looks-random"),
    ("env-example-value", ".env.example", "# MLFLOW_S3_SECRET_ACCESS_KEY=Zq8-looks-random"),
    ("dockerfile-secret", "Dockerfile", "ENV AIRFLOW__API_AUTH__JWT_SECRET=Zq8-looks-random"),
    ("dockerfile-secret", "Dockerfile", "ENV EVERGREEN_HOME=/data/home \\\n    MLFLOW_TRACKING_PASSWORD=Zq8"),
    ("dockerfile-secret", "Dockerfile", "ARG PIP_INDEX_TOKEN"),
    ("ini-secret", "deploy/mlflow/basic_auth.ini", "admin_password = Zq8-looks-random"),
    ("k8s-literal-secret", "deploy/k8s/x.yaml",
     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n"
     "        - name: c\n          env:\n            - {name: MLFLOW_TRACKING_PASSWORD, value: Zq8-looks-random}\n"),
    ("k8s-literal-secret", "deploy/k8s/x.yaml",
     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n"
     "        - name: c\n          env:\n            - name: AIRFLOW_CONN_EVERGREEN_STORE\n"
     "              valueFrom: {configMapKeyRef: {name: cfg, key: store}}\n"),
    ("k8s-secret-object", "deploy/k8s/x.yaml",
     "apiVersion: v1\nkind: Secret\nmetadata: {name: evergreen-serving}\nstringData: {store-conn: '{}'}\n"),
    ("k8s-secret-object", "deploy/k8s/x.yaml",
     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {MLFLOW_TRACKING_PASSWORD: Zq8}\n"),
]

GOOD = [
    ("docker-compose.yaml", '      POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required: set it}"'),
    ("docker-compose.yaml", '      KUBEFLOW: "${KUBEFLOW_TOKEN?KUBEFLOW_TOKEN must be set in .env: or empty}"'),
    ("docker-compose.yaml", "      AWS_SECRET_ACCESS_KEY: ${MLFLOW_S3_SECRET_ACCESS_KEY:-}"),
    ("docker-compose.yaml", "      - --backend-store-uri=postgresql+psycopg2://mlflow@postgres:5432/mlflow"),
    ("docker-compose.yaml", '    SQL_ALCHEMY_CONN: "postgresql+psycopg2://airflow:${AIRFLOW_DB_PASSWORD:?'
                            'AIRFLOW_DB_PASSWORD is required: set it in .env (see .env.example)}@postgres/airflow"'),
    ("docker-compose.yaml", '      test: ["CMD-SHELL", "airflow jobs check --hostname \\"$${HOSTNAME}\\""]'),
    (".env.example", "AIRFLOW_ADMIN_USER=admin\nAIRFLOW_ADMIN_PASSWORD=\nPOSTGRES_USER=postgres\nPOSTGRES_PASSWORD="),
    (".env.example", "# MLFLOW_S3_SECRET_ACCESS_KEY=\n# KUBEFLOW_NAMESPACE=kubeflow\nKUBEFLOW_TOKEN="),
    (".env.example", "#   openssl rand -hex 24                                   # passwords and secret keys"),
    ("Dockerfile", "ENV EVERGREEN_CONFIG_DIR=/opt/airflow/include/config \\\n    AIRFLOW__CORE__LOAD_EXAMPLES=False"),
    ("deploy/mlflow/basic_auth.ini", "[mlflow]\ndefault_permission = READ\n"
                                     "database_uri = postgresql+psycopg2://mlflow@postgres:5432/mlflow_auth"),
    ("deploy/mlflow/create_platform_user.py", '    value = os.environ.get(name, "")\n'
                                              '    password = _required("EVERGREEN_MLFLOW_PASSWORD")'),
    ("deploy/mongo/create-app-user.js", "const appPassword = process.env.MONGO_APP_PASSWORD;\n  pwd: appPassword,"),
    ("deploy/postgres/init-databases.sh",
     '  -v airflow_password="$AIRFLOW_DB_PASSWORD" -v mlflow_password="$MLFLOW_DB_PASSWORD"'),
    ("deploy/k8s/x.yaml",
     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n"
     "        - name: c\n          env:\n            - name: AIRFLOW_CONN_MLFLOW_DEFAULT\n"
     "              valueFrom: {secretKeyRef: {name: evergreen-serving, key: mlflow-conn}}\n"
     "            - {name: EVERGREEN_SPOOL_DIR, value: /spool/churn}\n"),
    ("deploy/k8s/x.yaml",
     "#   kubectl create secret generic s --from-literal=store-conn='<AIRFLOW_CONN_EVERGREEN_STORE JSON>'"),
    ("deploy/prometheus/prometheus.yml", "scrape_configs:\n  - job_name: serving-churn\n    static_configs:\n"
                                         '      - targets: ["serving-churn:8000"]'),
    ("deploy/x.yaml", "      monkey: admin\n      keycloak_url: https://sso.example.org"),
]


@pytest.mark.parametrize("rule,name,text", BAD, ids=[f"{r}:{i}" for i, (r, _, _) in enumerate(BAD)])
def test_each_rule_catches_its_bad_example(rule, name, text):
    found = findings(name, text)
    assert rule in {f.rule for f in found}, [str(f) for f in found]


@pytest.mark.parametrize("name,text", GOOD, ids=[f"good:{i}" for i in range(len(GOOD))])
def test_lines_that_look_close_pass(name, text):
    assert [str(f) for f in findings(name, text)] == []


def test_every_rule_has_a_bad_example():
    assert sorted({rule for rule, _, _ in BAD}) == sorted(RULES)


def test_a_default_planted_in_a_real_file_is_caught():
    """The files as they are pass; the same files with one default put back in fail, naming the line."""
    compose = (REPO / "docker-compose.yaml").read_text()
    planted = re.sub(r'(_AIRFLOW_WWW_USER_PASSWORD: )"\$\{[^}]*}"', r"\1airflow", compose, count=1)
    assert planted != compose
    (finding,) = findings("docker-compose.yaml", planted)
    assert finding.rule == "weak-value" and "_AIRFLOW_WWW_USER_PASSWORD='airflow'" in finding.what
    line = int(finding.where.rsplit(":", 1)[1])
    assert "_AIRFLOW_WWW_USER_PASSWORD" in planted.splitlines()[line - 1]

    ini = (REPO / "deploy" / "mlflow" / "basic_auth.ini").read_text()
    ini += "admin_username = admin\nadmin_password = password1234\n"  # MLflow's own default ini
    assert {f.rule for f in findings("deploy/mlflow/basic_auth.ini", ini)} >= {"known-default", "ini-secret"}
