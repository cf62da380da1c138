"""FakeKfpApiServer: a fake Kubeflow Pipelines API server on localhost, for tests only.

It speaks the v2beta1 REST paths that ``kfp.Client`` 2.17.3 (``kfp_server_api``) calls -- healthz, experiments,
pipeline upload / upload_version / list / list versions, create / get / list (with a ``display_name`` filter and
``created_at desc`` sort) / terminate runs -- with the same JSON field names, and keeps everything in memory.
It runs nothing: a test scripts how each run's state moves (``run_plan``), can make ``get_run`` fail for a while
(a network cut or a dying worker) and inspects every request it received.

Like the real server it rejects a run whose parameters are not inputs of the pipeline, or that misses a required one.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

FINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "ERROR", "CANCELED"}
PREFIX = "/apis/v2beta1"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class FakeRun:
    run_id: str
    display_name: str
    experiment_id: str
    parameters: dict[str, Any]
    pipeline_spec: dict[str, Any] | None
    version_ref: dict[str, Any] | None
    pipeline_root: str | None
    created_at: str
    plan: list[str]
    state: str = "PENDING"
    error: str | None = None
    failed_task: str | None = None
    history: list[str] = field(default_factory=list)

    def advance(self) -> None:
        """One ``get_run`` moves the run one step along its plan (the last step sticks)."""
        if self.state == "CANCELING":
            self.state = "CANCELED"
        elif self.state not in FINAL and self.plan:
            self.state = self.plan.pop(0)
        self.history.append(self.state)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "run_id": self.run_id,
            "display_name": self.display_name,
            "experiment_id": self.experiment_id,
            "storage_state": "AVAILABLE",
            "runtime_config": {"parameters": self.parameters, "pipeline_root": self.pipeline_root},
            "created_at": self.created_at,
            "state": self.state,
        }
        if self.version_ref:
            body["pipeline_version_reference"] = self.version_ref
        if self.state in FINAL:
            body["finished_at"] = _now()
        if self.error:
            body["error"] = {"code": 2, "message": self.error}
            body["run_details"] = {
                "task_details": [
                    {
                        "run_id": self.run_id,
                        "task_id": "t-1",
                        "display_name": self.failed_task or "task",
                        "state": "FAILED",
                        "error": {"code": 2, "message": self.error},
                    }
                ]
            }
        return body


class FakeKfpApiServer:
    """``with FakeKfpApiServer() as kfp: ...`` -- ``kfp.url`` is the host for a Kubeflow Connection."""

    def __init__(self) -> None:
        self.experiments: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, FakeRun] = {}
        self.requests: list[tuple[str, str]] = []
        #: states the next created run goes through, one per get_run (copied at creation)
        self.run_plan: list[str] = ["PENDING", "RUNNING", "SUCCEEDED"]
        #: error message and task name set on a run whose plan ends FAILED or ERROR
        self.run_error: tuple[str, str] | None = None
        #: number of upcoming get_run calls answered with 503
        self.unavailable_get_run = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKfpApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- test helpers -------------------------------------------------------------------------------
    def calls(self, method: str, path_suffix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.endswith(path_suffix))

    def runs_named(self, name: str) -> list[FakeRun]:
        return [r for r in self.runs.values() if r.display_name == name]

    def add_run(self, name: str, experiment: str, state: str, parameters: dict[str, Any] | None = None) -> FakeRun:
        """A run that exists before the test (e.g. submitted by a try whose worker died)."""
        exp_id = self._experiment_named(experiment) or self._create_experiment(experiment)
        run = FakeRun(str(uuid.uuid4()), name, exp_id, parameters or {}, None, None, None, _now(), [], state=state)
        self.runs[run.run_id] = run
        return run

    def _experiment_named(self, name: str) -> str | None:
        return next((i for i, e in self.experiments.items() if e["display_name"] == name), None)

    def _create_experiment(self, name: str, namespace: str | None = None) -> str:
        exp_id = str(uuid.uuid4())
        self.experiments[exp_id] = {
            "experiment_id": exp_id, "display_name": name, "namespace": namespace or "",
            "created_at": _now(), "storage_state": "AVAILABLE",
        }
        return exp_id

    # --- HTTP ---------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                code = {400: 3, 404: 5, 503: 14}.get(status, 2)
                self._send(status, {"error": message, "code": code, "message": message, "details": []})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append((method, url.path))
                if not url.path.startswith(PREFIX):
                    return self._error(404, f"unknown path {url.path}")
                parts = url.path[len(PREFIX) :].strip("/").split("/")
                try:
                    with fake._lock:
                        status, body = fake._dispatch(method, parts, query, self._body(), self.headers)
                except _HttpError as exc:
                    return self._error(exc.status, exc.message)
                self._send(status, body)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def _dispatch(self, method: str, parts: list[str], query: dict[str, str], raw: bytes, headers: Any):
        head = parts[0]
        if head == "healthz" and method == "GET":
            return 200, {"multi_user": False, "pipeline_store": "database"}
        if head == "experiments":
            return self._experiments(method, parts, query, raw)
        if head == "pipelines":
            return self._pipelines(method, parts, query, raw, headers)
        if head.startswith("runs"):
            return self._runs(method, parts, query, raw)
        raise _HttpError(404, f"unknown resource {'/'.join(parts)}")

    def _experiments(self, method, parts, query, raw):
        if method == "POST" and len(parts) == 1:
            body = json.loads(raw or b"{}")
            exp_id = self._create_experiment(body["display_name"], body.get("namespace"))
            return 200, self.experiments[exp_id]
        if method == "GET" and len(parts) == 1:
            items = _filtered(list(self.experiments.values()), query)
            return 200, {"experiments": items, "total_size": len(items), "next_page_token": ""}
        if method == "GET" and len(parts) == 2:
            if parts[1] not in self.experiments:
                raise _HttpError(404, f"experiment {parts[1]} not found")
            return 200, self.experiments[parts[1]]
        raise _HttpError(404, "unsupported experiment call")

    def _pipelines(self, method, parts, query, raw, headers):
        if method == "POST" and parts[1:] == ["upload"]:
            spec = _uploaded_spec(raw, headers)
            name = query.get("name") or spec.get("pipelineInfo", {}).get("name")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                raise _HttpError(409, f"pipeline {name} already exists")
            pipeline_id = str(uuid.uuid4())
            self.pipelines[pipeline_id] = {
                "pipeline_id": pipeline_id, "display_name": name, "name": name, "created_at": _now(),
            }
            self._add_version(pipeline_id, name, spec)
            return 200, self.pipelines[pipeline_id]
        if method == "POST" and parts[1:] == ["upload_version"]:
            pipeline_id = query.get("pipelineid")
            if pipeline_id not in self.pipelines:
                raise _HttpError(404, f"pipeline {pipeline_id} not found")
            name = query["name"]
            if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self.versions.values()):
                raise _HttpError(409, f"pipeline version {name} already exists")
            return 200, self._add_version(pipeline_id, name, _uploaded_spec(raw, headers))
        if method == "GET" and len(parts) == 1:
            items = _filtered(list(self.pipelines.values()), query)
            return 200, {"pipelines": items, "total_size": len(items), "next_page_token": ""}
        if method == "GET" and len(parts) == 3 and parts[2] == "versions":
            items = [{k: v for k, v in ver.items() if k != "pipeline_spec"} for ver in self.versions.values()
                     if ver["pipeline_id"] == parts[1]]
            items = _filtered(items, query)
            return 200, {"pipeline_versions": items, "total_size": len(items), "next_page_token": ""}
        raise _HttpError(404, "unsupported pipeline call")

    def _add_version(self, pipeline_id: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        version_id = str(uuid.uuid4())
        self.versions[version_id] = {
            "pipeline_id": pipeline_id, "pipeline_version_id": version_id, "display_name": name, "name": name,
            "created_at": _now(), "pipeline_spec": spec,
        }
        return {k: v for k, v in self.versions[version_id].items() if k != "pipeline_spec"}

    def _runs(self, method, parts, query, raw):
        if method == "POST" and parts == ["runs"]:
            return 200, self._create_run(json.loads(raw or b"{}")).to_json()
        if method == "GET" and parts == ["runs"]:
            items = [r for r in self.runs.values()
                     if not query.get("experiment_id") or r.experiment_id == query["experiment_id"]]
            items = _filtered([r.to_json() for r in items], query)
            if query.get("sort_by", "").replace(" ", "") == "created_atdesc":
                items.sort(key=lambda r: r["created_at"], reverse=True)
            size = int(query.get("page_size") or 10)
            return 200, {"runs": items[:size], "total_size": len(items), "next_page_token": ""}
        run_id, _, action = "/".join(parts[1:]).partition(":")
        run = self.runs.get(run_id)
        if run is None:
            raise _HttpError(404, f"run {run_id} not found")
        if method == "GET" and not action:
            if self.unavailable_get_run > 0:
                self.unavailable_get_run -= 1
                raise _HttpError(503, "upstream connect error (simulated outage)")
            run.advance()
            return 200, run.to_json()
        if method == "POST" and action == "terminate":
            if run.state not in FINAL:
                run.state = "CANCELING"
            return 200, {}
        raise _HttpError(404, "unsupported run call")

    def _create_run(self, body: dict[str, Any]) -> FakeRun:
        exp_id = body.get("experiment_id")
        if exp_id not in self.experiments:
            raise _HttpError(400, f"experiment {exp_id} not found")
        ref = body.get("pipeline_version_reference")
        spec = body.get("pipeline_spec")
        if ref:
            version = self.versions.get(ref.get("pipeline_version_id"))
            if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
                raise _HttpError(400, f"pipeline version {ref} not found")
            spec = version["pipeline_spec"]
        if not spec:
            raise _HttpError(400, "a run needs a pipeline_spec or a pipeline_version_reference")
        spec = spec.get("pipeline_spec", spec)  # the client wraps spec + platform spec when both exist
        runtime = body.get("runtime_config") or {}
        params = runtime.get("parameters") or {}
        declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise _HttpError(400, f"unknown pipeline parameter(s) {unknown}; declared: {sorted(declared)}")
        missing = sorted(n for n, d in declared.items()
                         if n not in params and "defaultValue" not in d and not d.get("isOptional"))
        if missing:
            raise _HttpError(400, f"missing required pipeline parameter(s) {missing}")
        run = FakeRun(
            run_id=str(uuid.uuid4()), display_name=body.get("display_name") or "", experiment_id=exp_id,
            parameters=params, pipeline_spec=spec, version_ref=ref, pipeline_root=runtime.get("pipeline_root"),
            created_at=_now(), plan=list(self.run_plan),
        )
        if self.run_plan and self.run_plan[-1] in ("FAILED", "ERROR") and self.run_error:
            run.error, run.failed_task = self.run_error
        self.runs[run.run_id] = run
        return run


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _filtered(items: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    """Apply a kfp Filter (JSON predicates; EQUALS only, the operation given by name or number)."""
    if not query.get("filter"):
        return items
    for predicate in json.loads(query["filter"]).get("predicates", []):
        if predicate.get("operation") not in ("EQUALS", 1):
            raise _HttpError(400, f"fake KFP API supports EQUALS filters only, got {predicate}")
        value = predicate.get("string_value", predicate.get("stringValue"))
        items = [i for i in items if i.get(predicate["key"]) == value]
    return items


def _uploaded_spec(raw: bytes, headers: Any) -> dict[str, Any]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + raw
    )
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            docs = [d for d in yaml.safe_load_all(part.get_payload(decode=True)) if d]
            return docs[0]
    raise _HttpError(400, "multipart field 'uploadfile' missing")
