"""Fixtures shared by the DAG tests (a test module may override one with its own)."""

from __future__ import annotations

import pytest

from evergreen.config import get_config


@pytest.fixture(scope="module")
def model():
    return get_config().model("churn")


@pytest.fixture(scope="module")
def store():
    from evergreen.hooks.store import StoreHook

    return StoreHook().get_conn()


@pytest.fixture(scope="module")
def mlflow_hook():
    from evergreen.hooks.mlflow import MlflowHook

    return MlflowHook()
