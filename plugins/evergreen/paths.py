"""Where embedded state lives.

Everything Evergreen keeps on one machine sits under one home folder, ``EVERGREEN_HOME`` (default
``.evergreen/`` in the checkout), so deleting that folder resets everything. Production replaces each
location with a URI or an Airflow Connection; nothing here is read when those are set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
