"""The typed ``serving:`` policy of a model block (what the serving app does for that model).

Standard library only, so the config loader (imported at DAG parse time) can hold one. Built and validated by the
loader's typed builder, so an invalid block fails naming the field, like every other config error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogFull = Literal["answer", "refuse"]


@dataclass(frozen=True)
class ServingPolicy:
    # Micro-batching: concurrent single-row requests are scored in one model call of at most max_batch_rows rows,
    # waiting at most max_wait_ms for the batch to fill.
    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    # Request limits: rows per request and body size; beyond them a 413 names the limit.
    max_request_rows: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    # How often the app re-reads the registry aliases (a moved alias is served within this many seconds).
    poll_interval_s: float = 10.0
    # When the prediction log refuses a record (its disk bound is reached: the store has been unreachable for
    # long), "answer" still answers (the refusal is counted in /metrics and the response says logged: false);
    # "refuse" answers 503 instead, so no prediction is ever served without its record.
    log_full: LogFull = "answer"

    def _check(self, where: str) -> None:
        from evergreen.config import ConfigError

        for name in ("max_batch_rows", "max_request_rows", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: {getattr(self, name)} is not allowed; expected a whole number >= 1")
        for name in ("max_wait_ms", "poll_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name}: {getattr(self, name)} is not allowed; expected a number > 0")
