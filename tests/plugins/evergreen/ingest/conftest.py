"""The ``env`` fixture of the ingestion tests: a fresh store, landing zone and lake per test."""

from __future__ import annotations

import pytest
from ingest_env import Env, make_env


@pytest.fixture
def env(tmp_path) -> Env:
    e = make_env(tmp_path / "env")
    yield e
    e.store.close()
