"""Run a compiled Kubeflow pipeline through ``kfp.local`` in a process of its own.

The Airflow operator starts this module as a child process (``python -m evergreen.kfp_local ...``) so that a
component that crashes, leaks or is killed for using too much memory takes this process down, never the Airflow
worker. The child runs the same compiled IR YAML a Kubeflow cluster would run: ``kfp.local`` executes a package
loaded with ``kfp.components.load_component_from_file`` (each component in its own subprocess through
``SubprocessRunner(use_venv=False)``, i.e. with this interpreter and its installed packages).

The outcome goes to a JSON result file (the only channel back to the operator besides the log stream)::

    {"state": "SUCCEEDED" | "FAILED", "pipeline": ..., "local_run": ..., "run_dir": ...,
     "outputs": {name: value or {"uri", "name", "metadata"}}, "error": str | null, "failed_task": str | null,
     "duration_s": float}

A failing component's own exception line (``ValueError: training window 2026-11-01/2026-11-03 ...``) is found in
its streamed traceback and reported as ``error``, so the task log and the Airflow exception say what went wrong
instead of kfp's generic "Inner task failed".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure)\b.*$"
)
_FAILED_TASKS = re.compile(r"Inner task failed: (.+?)\.?\s*$")
RESULT_SUCCEEDED = "SUCCEEDED"
RESULT_FAILED = "FAILED"


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def component_error(lines: Iterable[str]) -> str | None:
    """The exception line(s) of the last Python traceback in a component log, or None.

    kfp.local streams each component's output indented; the traceback's last line (same indentation as its
    ``Traceback`` header) carries the exception type and message, possibly continued on the following lines.
    """
    lines = [strip_ansi(line.rstrip("\n")) for line in lines]
    headers = [i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"]
    start = headers[-1] if headers else None
    if start is None:
        return None
    indent = len(lines[start]) - len(lines[start].lstrip())
    for i in range(start + 1, len(lines)):
        line = lines[i]
        body = line[indent:] if len(line) - len(line.lstrip()) == indent else None
        if body is None or not _EXCEPTION_LINE.match(body):
            continue
        message = [body]
        for more in lines[i + 1 :]:
            # a multi-line message continues at the same indentation until the component's output ends
            if not more.strip() or len(more) - len(more.lstrip()) != indent or more.lstrip().startswith("["):
                break
            message.append(more[indent:])
        return "\n".join(message)[:4000]
    return None


class _Tee:
    """A text stream that writes through and remembers the last lines (kfp prints component logs to stdout)."""

    def __init__(self, stream: TextIO, keep: int = 2000) -> None:
        self._stream = stream
        self._keep = keep
        self._partial = ""
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self._stream.write(text)
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        self.lines.extend(done)
        if len(self.lines) > self._keep:
            del self.lines[: len(self.lines) - self._keep]
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _jsonable(value: Any) -> Any:
    """Pipeline outputs as JSON: parameters as they are, artifacts as their URI, name and metadata."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "uri"):
        metadata = _jsonable(dict(value.metadata or {}))
        return {"uri": value.uri, "name": getattr(value, "name", None), "metadata": metadata}
    return str(value)


def run_package(package: str, arguments: dict[str, Any], pipeline_root: str) -> dict[str, Any]:
    """Run the compiled pipeline ``package`` with ``arguments`` under ``pipeline_root``; return the result dict."""
    from kfp import components, local

    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    result: dict[str, Any] = {"state": RESULT_FAILED, "outputs": {}, "error": None, "failed_task": None}
    try:
        pipeline = components.load_component_from_file(package)
        result["pipeline"] = pipeline.name
        # use_venv=False: components run with this interpreter and the platform's pinned packages (no per-task
        # virtualenv and pip install); the isolation that matters -- from the Airflow worker -- is this process.
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root, raise_on_error=True)
        try:
            task = pipeline(**arguments)
        except RuntimeError as exc:
            message = strip_ansi(str(exc))
            failed = _FAILED_TASKS.search(message)
            result["failed_task"] = failed.group(1).replace("'", "") if failed else None
            result["error"] = component_error(tee.lines) or message
        else:
            result["state"] = RESULT_SUCCEEDED
            result["outputs"] = {name: _jsonable(value) for name, value in (task.outputs or {}).items()}
    except Exception as exc:  # a bad package or bad arguments: report it the same way
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sys.stdout = tee._stream
    runs = sorted((p for p in Path(pipeline_root).iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    result["local_run"] = runs[-1].name if runs else None
    result["run_dir"] = str(runs[-1]) if runs else None
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evergreen.kfp_local", description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="compiled pipeline (KFP IR YAML)")
    parser.add_argument("--arguments", required=True, help="JSON file with the pipeline arguments")
    parser.add_argument("--pipeline-root", required=True, help="folder for this run's artifacts")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = json.loads(Path(args.arguments).read_text())
    result = run_package(args.package, arguments, args.pipeline_root)
    write_json_atomic(args.result, result)
    if result["state"] != RESULT_SUCCEEDED:
        log.error("pipeline failed in task %s: %s", result["failed_task"], result["error"])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
