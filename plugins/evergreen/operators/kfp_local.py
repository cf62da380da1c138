"""Run a compiled Kubeflow pipeline through ``kfp.local`` in a process of its own.

Both sides of that process live here. The Airflow operator's side is :class:`LocalRunner`: it starts this module
as a child process (``python -m evergreen.operators.kfp_local ...``) in its own process group, streams its output,
and ends the whole group when the task is killed or times out, so that a component that crashes, leaks or is
killed for using too much memory takes the child down, never the Airflow worker. The child's side is
:func:`main`: it runs the same compiled IR YAML a Kubeflow cluster would run: ``kfp.local`` executes a package
loaded with ``kfp.components.load_component_from_file`` (each component in its own subprocess through
``SubprocessRunner(use_venv=False)``, i.e. with this interpreter and its installed packages). Nothing here imports
Airflow: the child starts fast, and what a failure means for the task is the operator's to say.

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
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from evergreen import lake
from evergreen.jsonable import jsonable

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure)\b.*$"
)
_FAILED_TASKS = re.compile(r"Inner task failed: (.+?)\.?\s*$")
RESULT_SUCCEEDED = "SUCCEEDED"
RESULT_FAILED = "FAILED"
RESULT_FILE = "result.json"
ARGUMENTS_FILE = "arguments.json"


# --- the child's side: run the package, write the result ------------------------------------------------


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


def _output(value: Any) -> Any:
    """A pipeline output as JSON: a parameter as it is, an artifact as its URI, name and metadata (a collected
    output is a list of them)."""
    if hasattr(value, "uri"):
        metadata = jsonable(dict(value.metadata or {}))
        return {"uri": value.uri, "name": getattr(value, "name", None), "metadata": metadata}
    if isinstance(value, (list, tuple)):
        return [_output(v) for v in value]
    return jsonable(value)


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
            result["outputs"] = {name: _output(value) for name, value in (task.outputs or {}).items()}
    except Exception as exc:  # a bad package or bad arguments: report it the same way
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sys.stdout = tee._stream
    runs = sorted((p for p in Path(pipeline_root).iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    result["local_run"] = runs[-1].name if runs else None
    result["run_dir"] = str(runs[-1]) if runs else None
    result["duration_s"] = round(time.monotonic() - started, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evergreen.operators.kfp_local", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--package", required=True, help="compiled pipeline (KFP IR YAML)")
    parser.add_argument("--arguments", required=True, help="JSON file with the pipeline arguments")
    parser.add_argument("--pipeline-root", required=True, help="folder for this run's artifacts")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = json.loads(Path(args.arguments).read_text())
    result = run_package(args.package, arguments, args.pipeline_root)
    lake.write_text_atomic(json.dumps(result, indent=2, default=str), args.result)
    if result["state"] != RESULT_SUCCEEDED:
        log.error("pipeline failed in task %s: %s", result["failed_task"], result["error"])
        return 1
    return 0


# --- the operator's side: the child process ---------------------------------------------------------------


class LocalRunner:
    """One run of this module as a child process, in its own process group, with its output streamed.

    ``folder`` holds this run: the arguments file, the result file and, as the pipeline root, the kfp.local run.
    ``environment`` is added to the child's environment, which every component inherits: the way credentials reach
    the steps (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), since the arguments file is on disk and must hold none.
    :meth:`run` blocks until the child exits and returns the result it wrote, or None when it died first (then
    :meth:`describe_exit` and :attr:`tail` say how). :meth:`stop` may be called from a signal handler while
    :meth:`run` is streaming: it ends the child and every component it started.
    """

    def __init__(
        self, package: str | os.PathLike[str], arguments: dict[str, Any], folder: Path, *,
        environment: Mapping[str, str] | None = None, memory_limit_mb: int | None = None, tail_lines: int = 40,
        logger: logging.Logger | None = None,
    ) -> None:
        self.package = Path(package).resolve()
        self.arguments = arguments
        self.environment = dict(environment or {})
        self.folder = folder
        self.memory_limit_mb = memory_limit_mb
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.exit_code: int | None = None
        self.log = logger or log
        self._process: subprocess.Popen[str] | None = None

    @property
    def result_file(self) -> Path:
        return self.folder / RESULT_FILE

    def run(self, on_line: Callable[[str], None]) -> dict[str, Any] | None:
        """Start the child, hand each output line to ``on_line``, wait for it; the result it wrote, or None."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.result_file.unlink(missing_ok=True)
        args_file = self.folder / ARGUMENTS_FILE
        args_file.write_text(json.dumps(self.arguments, indent=2, default=str))
        cmd = [
            sys.executable, "-m", "evergreen.operators.kfp_local",
            "--package", str(self.package),
            "--arguments", str(args_file),
            "--pipeline-root", str(self.folder),
            "--result", str(self.result_file),
        ]
        env = {**os.environ, **self.environment}
        # Components are started as `python3 ...` resolved through PATH: make it this interpreter's environment.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        self._process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,  # own process group: stop() ends the runner and every component it started
            preexec_fn=self._limit_memory if self.memory_limit_mb else None,
        )
        try:
            assert self._process.stdout is not None
            for line in self._process.stdout:
                line = line.rstrip("\n")
                self.tail.append(line)
                on_line(line)
            self.exit_code = self._process.wait()
        except BaseException:
            # timeout, SIGTERM or an error in this loop: never leave an orphan pipeline behind
            self.stop()
            raise
        finally:
            self._process = None
        return json.loads(self.result_file.read_text()) if self.result_file.exists() else None

    def _limit_memory(self) -> None:  # runs in the child between fork and exec
        import resource

        limit = int(self.memory_limit_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def describe_exit(self) -> str:
        code = self.exit_code
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if -code == signal.SIGKILL else ""
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"

    def stop(self, grace: float = 10.0) -> None:
        """End the child's process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.log.warning("Stopping the local Kubeflow runner (pid %s) and its components", process.pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    sys.exit(main())
