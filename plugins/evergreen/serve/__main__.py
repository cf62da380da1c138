"""``python -m evergreen.serve --model churn [--host 127.0.0.1] [--port 8000] [--spool-dir DIR]``: one uvicorn
process serving one model (:func:`evergreen.serve.app.create_app`).

The registry and the store come from the ``mlflow_default`` and ``evergreen_store`` Connections (``AIRFLOW_CONN_*``
environment variables in a container), or the embedded ones in embedded mode (``make serve``). The prediction log
spools under ``--spool-dir`` (default ``EVERGREEN_SPOOL_DIR``; in embedded mode ``$EVERGREEN_HOME/spool/<model>``);
outside embedded mode a missing spool folder is an error, like a missing Connection. SIGTERM (or Ctrl-C) stops
accepting requests, lets the ones in flight finish, then drains the prediction log into the store before the
process exits (uvicorn's lifespan shutdown).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

SPOOL_ENV = "EVERGREEN_SPOOL_DIR"
GRACEFUL_SHUTDOWN_S = 30  # for requests in flight; the prediction log's own drain comes after
SWITCH_INTERVAL_S = 0.0005


def spool_dir(model: str, given: str | None) -> str:
    """The prediction log's folder: ``given``, ``EVERGREEN_SPOOL_DIR``, or (embedded mode only) the home's."""
    from evergreen.paths import EMBEDDED_ENV, embedded_mode, home

    chosen = given or os.environ.get(SPOOL_ENV)
    if chosen:
        return str(Path(chosen).expanduser())
    if embedded_mode():
        return str(home().root / "spool" / model)
    raise SystemExit(f"no spool folder for the prediction log: pass --spool-dir or set {SPOOL_ENV} (a local disk "
                     f"that survives a restart of the process, e.g. a volume); the embedded default applies only in "
                     f"embedded mode ({EMBEDDED_ENV}=1, set by make serve)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evergreen.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model to serve (a block of include/config/*.yaml)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--spool-dir", default=None, help=f"prediction log folder (default: ${SPOOL_ENV})")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)

    import uvicorn

    from evergreen.config import ConfigError, get_config
    from evergreen.serve.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The scorer threads run pandas and scikit-learn with the GIL held between their C calls; with CPython's 5 ms
    # default switch interval the event loop, which gives the GIL up at every socket call, waits up to 5 ms to get
    # it back each time, so fewer requests reach each micro-batch. 0.5 ms keeps the loop accepting while a batch
    # is scored (measured with wrk, 64 connections: about 20% more requests/s and half the p99).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # MLflow draws a progress bar for every artifact download (each model swap); a server's log is no terminal.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        model = get_config().model(args.model)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    app = create_app(model, spool_dir=spool_dir(model.name, args.spool_dir), freeze_gc=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
