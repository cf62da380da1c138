"""Where embedded state lives.

Everything Evergreen keeps on one machine sits under one home folder, ``EVERGREEN_HOME`` (default
``.evergreen/`` in the checkout), so deleting that folder resets everything. Production replaces each
location with a URI or an Airflow Connection; nothing here is read when those are set.

Embedded defaults stand in for a missing Connection only in *embedded mode* (:func:`embedded_mode`), which
``make demo``, ``make airflow`` and the tests switch on through :func:`evergreen.airflow_env.airflow_env`. Anywhere
else a missing Connection is an error that names it (:func:`missing_connection`): production never guesses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the variable that switches embedded mode on (``1``); set by ``airflow_env()``, never by the production image
EMBEDDED_ENV = "EVERGREEN_EMBEDDED"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def airflow(self) -> Path:
        return self.root / "airflow"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"

    @property
    def store_uri(self) -> str:
        return f"sqlite:///{self.root / 'store.db'}"

    @property
    def lake(self) -> str:
        return str(self.root / "lake")

    @property
    def landing(self) -> str:
        return str(self.root / "landing")

    @property
    def kubeflow(self) -> Path:
        return self.root / "kubeflow"


def home() -> Home:
    """The embedded home, from ``EVERGREEN_HOME`` at call time (tests point it at a temp folder)."""
    root = os.environ.get("EVERGREEN_HOME") or str(REPO_ROOT / ".evergreen")
    return Home(Path(root).expanduser().resolve())


def lake_uri() -> str:
    """Root of the data lake: ``EVERGREEN_LAKE_URI`` (any fsspec URI) or the embedded folder."""
    return os.environ.get("EVERGREEN_LAKE_URI") or home().lake


def landing_uri() -> str:
    """Root of the landing zone for outcome files: ``EVERGREEN_LANDING_URI`` or the embedded folder."""
    return os.environ.get("EVERGREEN_LANDING_URI") or home().landing


def config_dir() -> Path:
    """Folder of model config YAML files: ``EVERGREEN_CONFIG_DIR`` or ``include/config``."""
    return Path(os.environ.get("EVERGREEN_CONFIG_DIR") or REPO_ROOT / "include" / "config")


def embedded_mode() -> bool:
    """True when embedded defaults may stand in for a missing Connection: ``EVERGREEN_EMBEDDED=1`` (or ``true``).

    Read at call time, like :func:`home`. Unset, empty or any other value means production: a hook without its
    Connection raises :func:`missing_connection` instead of opening a local SQLite file or running kfp.local.
    """
    return os.environ.get(EMBEDDED_ENV, "").strip().lower() in ("1", "true")


def missing_connection(conn_id: str, what: str, example: str) -> Exception:
    """The ``AirflowConfigException`` for a Connection that is not defined outside embedded mode.

    It names the Connection, the environment variable that defines it (``example`` is its JSON value, without
    secrets) and why no default was used. The hooks raise it; one wording for all of them.
    """
    from airflow.sdk.exceptions import AirflowConfigException

    variable = "AIRFLOW_CONN_" + conn_id.upper()
    return AirflowConfigException(
        f"Connection '{conn_id}' for {what} is not defined; define it (for example {variable}='{example}', or in "
        f"the Airflow UI/secrets backend). Embedded defaults apply only in embedded mode ({EMBEDDED_ENV}=1, set "
        "by make demo, make airflow and the tests)"
    )
