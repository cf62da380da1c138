"""MLflow tracking and registry reads that every stage shares.

One get-or-create of an experiment, one lookup of the registry's aliases, one definition (and parser) of the
training-window tag, one quoting rule for search filters. Takes an ``MlflowClient``: KFP component bodies run
without Airflow, so this module never imports a hook. MLflow is imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

TAG = "evergreen."
TRAINING_WINDOW_TAG = f"{TAG}training_window"
DATA_FINGERPRINT_TAG = f"{TAG}data_fingerprint"
CHAMPION = "champion"
CHALLENGER = "challenger"
ALIASES = (CHAMPION, CHALLENGER)


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``) on first use.

    Two runs may create it at the same moment (both monitoring DAGs of a fresh install, parallel pipeline steps):
    the one that loses the race reads the winner's.
    """
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location or None)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def quote(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter that matches exactly ``value``.

    MLflow tokenises a filter with sqlparse and then only strips the literal's outer quotes: an escape (``\\'`` or
    ``''``) is tokenised as part of the string but never unescaped, so it would match a different value. A value
    without ``'`` is single-quoted; one with ``'`` but no ``"`` is double-quoted (MLflow accepts both). A value with
    both quote characters, or ending in a backslash (sqlparse reads ``\\'`` as an escaped quote, so the literal
    would run on into the rest of the filter), has no literal MLflow reads back as itself: ValueError naming it.
    """
    text = str(value)
    if not text.endswith("\\"):
        if "'" not in text:
            return f"'{text}'"
        if '"' not in text:
            return f'"{text}"'
    raise ValueError(
        f"search filter value {text!r} cannot be quoted for MLflow: it "
        + ("ends in a backslash" if text.endswith("\\") else "holds both ' and \"")
        + "; MLflow's filter strings have no escapes"
    )


def aliases(client: MlflowClient, model: str) -> dict[str, str]:
    """The registered model's aliases (alias -> version); empty when nothing is registered under ``model`` yet."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException as exc:
        if _missing(exc):
            return {}
        raise
    return {k: str(v) for k, v in (registered.aliases or {}).items()}


def alias_version(client: MlflowClient, model: str, alias: str) -> Any | None:
    """The model version behind ``alias`` (``champion``, ``challenger``), or None when there is none."""
    version = aliases(client, model).get(alias)
    return None if version is None else client.get_model_version(model, version)


def versions(client: MlflowClient, model: str) -> list[Any]:
    """Every version of ``model``, oldest first; empty when nothing is registered."""
    return sorted(client.search_model_versions(f"name={quote(model)}"), key=lambda v: int(v.version))


def window_tag(start: dt.date, end: dt.date) -> str:
    """The value of :data:`TRAINING_WINDOW_TAG`: ``YYYY-MM-DD/YYYY-MM-DD``, start inclusive, end exclusive."""
    return f"{start.isoformat()}/{end.isoformat()}"


def parse_window_tag(value: str | None) -> tuple[dt.date, dt.date]:
    """``(start, end)`` from a training-window tag; ValueError naming the tag and its form when it is not one."""
    try:
        a, b = str(value).split("/")
        start, end = dt.date.fromisoformat(a), dt.date.fromisoformat(b)
    except ValueError:
        raise ValueError(f"tag {TRAINING_WINDOW_TAG}={value!r} is not 'YYYY-MM-DD/YYYY-MM-DD'") from None
    return start, end


def version_window(version: Any) -> tuple[dt.date, dt.date]:
    """The training window of a model version from its tag; ValueError naming the version when it is missing or
    malformed."""
    tag = (getattr(version, "tags", None) or {}).get(TRAINING_WINDOW_TAG)
    if not tag:
        raise ValueError(f"version {version.version} has no tag {TRAINING_WINDOW_TAG}; set it "
                         "('YYYY-MM-DD/YYYY-MM-DD', the training window's first day and the day after its last)")
    try:
        return parse_window_tag(tag)
    except ValueError as exc:
        raise ValueError(f"version {version.version}: {exc}") from None
