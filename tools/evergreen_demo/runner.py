"""What the demo's modules share: printing the demo's own output, and the error that stops it.

Airflow's, the pipelines' and the scoring app's output goes to log files under ``$EVERGREEN_HOME/demo-logs`` (and
Airflow's task logs under ``$EVERGREEN_HOME/airflow/logs``): the terminal shows only what :func:`say` prints.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def say(text: str = "") -> None:
    """The demo's report goes to stdout (it is the program's output, not a log)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors, so libraries' own handlers and progress bars too)
    to ``log`` while the block runs: the demo's terminal shows only :func:`say`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
