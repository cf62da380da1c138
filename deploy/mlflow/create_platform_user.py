"""Create (or update) the MLflow user the platform works as: a plain user, never an admin.

Run once per `docker compose up` by the `mlflow-init` service, after the MLflow server is healthy. It signs in as
the MLflow admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which MLflow's client reads itself) and makes
sure the user EVERGREEN_MLFLOW_USER exists with the password EVERGREEN_MLFLOW_PASSWORD and without admin rights. The
`mlflow_default` Connection of the Airflow services carries the same two values. Running it again is safe: it sets
the password again (so rotating it in .env takes effect) and removes admin rights if someone granted them.

The platform user owns what it creates (experiments, registered models) and reads the rest (default_permission
READ in deploy/mlflow/basic_auth.ini); it cannot manage users or other users' resources.
"""

from __future__ import annotations

import os
import sys
import time


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"create_platform_user: {name} is not set")
    return value


def wait_for_server(uri: str, timeout: float = 120.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{uri.rstrip('/')}/health", timeout=5).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"create_platform_user: the MLflow server at {uri} did not answer /health in {timeout:.0f} s")
        time.sleep(2)


def main() -> int:
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient

    uri = _required("MLFLOW_TRACKING_URI")
    admin = _required("MLFLOW_TRACKING_USERNAME")
    _required("MLFLOW_TRACKING_PASSWORD")
    user = _required("EVERGREEN_MLFLOW_USER")
    password = _required("EVERGREEN_MLFLOW_PASSWORD")
    if user == admin:
        sys.exit(f"create_platform_user: the platform user '{user}' is the MLflow admin; give it its own name "
                 "(MLFLOW_PLATFORM_USER in .env)")
    wait_for_server(uri)
    client = AuthServiceClient(uri)
    try:
        ensure_plain_user(client, user, password)
    except RestException as exc:  # a bad admin password, a password MLflow rejects (under 12 characters), ...
        sys.exit(f"create_platform_user: MLflow refused: {exc}")
    return 0


def ensure_plain_user(client, user: str, password: str) -> None:
    from mlflow.exceptions import RestException

    try:
        client.get_user(user)
    except RestException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(user, password)
        print(f"created MLflow user '{user}'")
    else:
        client.update_user_password(user, password)
        print(f"MLflow user '{user}' exists; password set again")
    if client.get_user(user).is_admin:
        client.update_user_admin(user, False)
        print(f"MLflow user '{user}' was an admin; admin rights removed")


if __name__ == "__main__":
    sys.exit(main())
