"""UI links for records, alerts and operator extra links.

Links are built from the public base URLs in the platform config (``airflow_base_url``, ``mlflow_base_url``), never
from a tracking URI or a Connection: a link is shown to people and must not carry a credential.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit


def airflow_run_url(base_url: str, dag_id: str, run_id: str, task_id: str | None = None, map_index: int = -1) -> str:
    """The Airflow 3 UI page of a DAG run (or of one task instance of it)."""
    url = f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    if task_id:
        url += f"/tasks/{quote(task_id, safe='')}"
        if map_index is not None and map_index >= 0:
            url += f"/mapped/{map_index}"
    return url


def mlflow_run_url(base_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, or None when no UI address is known (``platform.mlflow_base_url`` unset).

    A ``user:password@`` written into the base URL is dropped: a link is shown to people and stored in records.
    """
    if not base_url:
        return None
    parts = urlsplit(base_url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return f"{urlunsplit(parts).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
