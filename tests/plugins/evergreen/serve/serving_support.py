"""Helpers of the serving tests: the recording prediction log (a test double of
:class:`evergreen.serve.predlog.PredictionLog`), configs, request rows, expected scores, a live uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from evergreen.config import get_config

CONN_ID = "serve_test_mlflow"


class RecordingLog:
    """Test double of the prediction log: keeps appended records in memory; ``accept=False`` refuses them (as the
    real log does when its disk bound is reached), counted in ``stats()`` like the real one."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.records: list[dict[str, Any]] = []
        self.refused = 0
        self.started = self.closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True

    def append(self, records) -> bool:
        with self._lock:
            if not self.accept:
                self.refused += len(records)
                return False
            self.records.extend(dict(r) for r in records)
            return True

    def close(self, timeout_s: float = 30.0) -> None:
        self.closed = True

    def stats(self) -> dict[str, int]:
        return {"queue_depth": 0, "spooled_bytes": 0, "shipped_total": len(self.records),
                "refused_total": self.refused, "ship_errors_total": 0}


@dataclasses.dataclass
class Registry:
    root: Any
    client: Any
    uri: str
    v1: str
    v2: str
    pipelines: dict[str, Any]

    def set_aliases(self, champion: str | None, challenger: str | None = None) -> None:
        from evergreen import tracking
        from evergreen.promote.registry import move_alias

        for alias, version in (("champion", champion), ("challenger", challenger)):
            current = tracking.aliases(self.client, "churn").get(alias)
            if current != version:
                move_alias(self.client, "churn", alias, version, current, previous_status=None)


def churn(**overrides: Any):
    """The churn config with serving / ab_test fields replaced (``serving={...}``, ``ab_test={...}``)."""
    model = get_config().model("churn")
    changes = {}
    for name, values in overrides.items():
        changes[name] = dataclasses.replace(getattr(model, name), **values)
    return dataclasses.replace(model, **changes)


def source():
    from evergreen.serve.models import MlflowModelSource

    return MlflowModelSource("churn", mlflow_conn_id=CONN_ID)


def rows(n: int, seed: object = "serve") -> list[dict[str, Any]]:
    """``n`` valid churn records (features by name) with entity ids ``c0..``."""
    from evergreen_demo import simulate

    model = get_config().model("churn")
    frame = simulate.feature_frame(model, n, seed)
    out = []
    for i, rec in enumerate(frame.to_dict(orient="records")):
        clean = {k: (None if v is None or (isinstance(v, float) and v != v) else
                     v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
        out.append({"customer_id": f"c{i}", **clean})
    return out


def expected_scores(pipeline, records: list[dict[str, Any]]) -> list[float]:
    """The version's own positive-class scores of records (what the app must answer)."""
    import pandas as pd

    model = get_config().model("churn")
    X = pd.DataFrame([{f: r[f] for f in model.feature_names} for r in records])
    proba = pipeline.predict_proba(X)
    return proba[:, list(pipeline.classes_).index(model.label.positive_class)].tolist()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """The app under a real uvicorn on a free localhost port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def run(coro):
    return asyncio.run(coro)


def metric_samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric name in Prometheus text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append((dict(sample.labels), sample.value))
    return out


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the matching samples (0 when there is none)."""
    return sum(v for _, v in metric_samples(text, name, **labels))
