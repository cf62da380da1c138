"""Run a compiled Kubeflow pipeline from an Airflow task, on a Kubeflow cluster or on the local machine.

The mode comes from the Kubeflow Connection (:class:`~evergreen.hooks.kubeflow.KubeflowHook`):

* **local** (no API host): the compiled IR YAML runs through ``kfp.local``'s SubprocessRunner in a child process
  (:class:`~evergreen.operators.kfp_local.LocalRunner`, ``python -m evergreen.operators.kfp_local``) in its own
  process group. A component that crashes, or a runner killed for memory (``memory_limit_mb``), fails the task
  with the component's message; it cannot take the worker down. ``on_kill`` (task marked failed, execution
  timeout) ends the whole process group. A try that finds the result of an earlier successful try of the same
  task instance reuses it instead of training again.
* **remote** (API host set): ``kfp.Client`` uploads the package as a pipeline version named by its content hash,
  submits a run whose name is derived from the DAG run (``<dag_id>.<run_id>.<task_id>``, the same for every
  try) and polls ``get_run`` until a final state (SUCCEEDED, FAILED, SKIPPED, ERROR, CANCELED; the client's
  ``wait_for_run_completion`` is not used, it never returns for a cancelled run). The run id is kept in
  Airflow's task state store (:class:`airflow.sdk.ResumableJobMixin`); a retry or a restarted worker re-attaches
  to the run instead of submitting a duplicate, and a run submitted by a try that died before it could record
  the id is found by its name. ``on_kill`` terminates the remote run.

Parameters never carry a credential or, for a cluster, a file of the Airflow worker. A parameter that is a URL with
``user:password@`` fails the task in both modes; in remote mode so does one that names this machine's filesystem
(an absolute path, ``~``, a ``file:`` or ``sqlite:`` URI), before anything is submitted. Credentials reach the
steps through their environment instead: locally the runner's subprocess environment gets the MLflow Connection's
``MLFLOW_TRACKING_USERNAME``/``_PASSWORD`` (:meth:`~evergreen.hooks.mlflow.MlflowHook.credentials_env`); on a cluster
the pods get them from a Kubernetes Secret (see the README). The "MLflow run" link is built from
``platform.mlflow_base_url`` only, never from the tracking URI.

Failures: a pipeline that ran and failed (a component raised, the run FAILED or was CANCELED) is final for the
task (``AirflowFailException``: the same inputs would fail again); a runner that died, an ERROR state or an API
error is retried.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink, ResumableJobMixin
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from evergreen.hooks.kubeflow import KubeflowHook
from evergreen.operators.kfp_local import RESULT_FILE, RESULT_SUCCEEDED, LocalRunner
from evergreen.paths import home
from evergreen.tracking import TAG, quote

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

#: Run states after which Kubeflow does nothing more with a run.
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "ERROR", "CANCELED"})
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^@\s]*:[^@\s]*@")


def run_name_for(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    """The Kubeflow run name of a task instance: the same for every try, different for every DAG run."""
    name = f"{dag_id}.{run_id}.{task_id}"
    return f"{name}.{map_index}" if map_index is not None and map_index >= 0 else name


def credential_parameters(arguments: Mapping[str, Any]) -> list[str]:
    """Names of the parameters whose value is a URL carrying ``user:password@`` (never allowed in a run).

    Matched on the text, not with ``urlsplit``: a password with an unescaped ``/`` hides the user part from it.
    """
    return [name for name, value in sorted(arguments.items())
            if isinstance(value, str) and _USERINFO.match(value.strip())]


def worker_local_parameters(arguments: Mapping[str, Any]) -> list[str]:
    """Names of the parameters that point at this machine's filesystem, which a cluster's pods cannot see: an
    absolute path, ``~...``, or a ``file:`` / ``sqlite:`` URI."""
    local = ("/", "~", "file:", "sqlite:")
    return [name for name, value in sorted(arguments.items())
            if isinstance(value, str) and value.strip().lower().startswith(local)]


def _safe(part: str) -> str:
    return _SAFE.sub("_", part).strip("_") or "_"


def _state(run: Any) -> str:
    state = getattr(run, "state", None)
    return str(getattr(state, "value", state) or "RUNTIME_STATE_UNSPECIFIED").upper()


class KubeflowRunLink(BaseOperatorLink):
    """The Kubeflow UI page of the run (remote mode) or the local run's folder (local mode)."""

    name = "Kubeflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "kfp_run_url", None) or ""


class MlflowRunLink(BaseOperatorLink):
    """The MLflow run the pipeline logged (found by its Airflow lineage tags)."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "mlflow_run_url", None) or ""


class KubeflowPipelineOperator(ResumableJobMixin, BaseOperator):
    """Run a compiled Kubeflow pipeline and wait for it.

    :param pipeline_package: path of the compiled pipeline (KFP IR YAML). (templated)
    :param pipeline_compiler: instead of a package, ``"module:function"`` of a function ``(path) -> path`` that
        compiles the pipeline; it runs on the worker that runs the task, so no compiled file has to travel between
        workers, and the package kept with the run is the one that ran.
    :param arguments: pipeline parameters; must be JSON-serialisable. (templated)
    :param experiment_name: Kubeflow experiment the run goes to (remote). (templated)
    :param run_name: override the run name derived from the DAG run (keep it try-independent). (templated)
    :param pipeline_root: artifact root; local default ``$EVERGREEN_HOME/kubeflow/local/...``, remote default the
        cluster's. (templated)
    :param kubeflow_conn_id: the Kubeflow Connection; no host means local mode.
    :param upload_pipeline: remote: upload the package as a pipeline version named by its content hash and run that
        version (visible in the Kubeflow UI); False submits the spec inline with the run.
    :param enable_caching: remote: override the compiled caching setting for every step (forces an inline spec).
    :param service_account: remote: Kubernetes service account of the run's pods.
    :param poll_interval: seconds between two ``get_run`` calls (remote).
    :param memory_limit_mb: local: address-space limit of the runner and of each component process.
    :param mlflow_experiment: MLflow experiment where the pipeline logs its run, for the "MLflow run" link.
    :param mlflow_base_url: public MLflow UI URL for the link (default: ``platform.mlflow_base_url``; neither set:
        no link).
    :param mlflow_conn_id: the MLflow Connection the steps use: local mode hands its credentials to the runner's
        environment, and the link's run is looked up through it. None for a pipeline that does not use MLflow.
    """

    template_fields: Sequence[str] = (
        "pipeline_package", "pipeline_compiler", "arguments", "experiment_name", "run_name", "pipeline_root",
    )
    template_fields_renderers = {"arguments": "json"}
    operator_extra_links = (KubeflowRunLink(), MlflowRunLink())
    ui_color = "#4285f4"
    external_id_key = "kfp_run_id"

    def __init__(
        self,
        *,
        pipeline_package: str | None = None,
        pipeline_compiler: str | None = None,
        arguments: dict[str, Any] | None = None,
        experiment_name: str = "evergreen",
        run_name: str | None = None,
        pipeline_root: str | None = None,
        kubeflow_conn_id: str = KubeflowHook.default_conn_name,
        upload_pipeline: bool = True,
        enable_caching: bool | None = None,
        service_account: str | None = None,
        poll_interval: float = 15.0,
        memory_limit_mb: int | None = None,
        mlflow_experiment: str | None = None,
        mlflow_base_url: str | None = None,
        mlflow_conn_id: str | None = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_package = pipeline_package
        self.pipeline_compiler = pipeline_compiler
        self.arguments = arguments
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.pipeline_root = pipeline_root
        self.kubeflow_conn_id = kubeflow_conn_id
        self.upload_pipeline = upload_pipeline
        self.enable_caching = enable_caching
        self.service_account = service_account
        self.poll_interval = poll_interval
        self.memory_limit_mb = memory_limit_mb
        self.mlflow_experiment = mlflow_experiment
        self.mlflow_base_url = mlflow_base_url
        self.mlflow_conn_id = mlflow_conn_id
        # Set while running; read by on_kill, the extra links and a retry.
        self.kfp_run_id: str | None = None
        self.kfp_run_url: str | None = None
        self.mlflow_run_url: str | None = None
        self._runner: LocalRunner | None = None

    @cached_property
    def hook(self) -> KubeflowHook:
        return KubeflowHook(kubeflow_conn_id=self.kubeflow_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        json.dumps(self.arguments or {})  # fail here, with the arguments in the traceback, not in the runner
        self._check_arguments()
        self.run_name = self.run_name or self._derived_run_name(context)
        if self.pipeline_compiler:
            self.pipeline_package = self._compile(context)
        if not self.pipeline_package or not Path(self.pipeline_package).is_file():
            raise AirflowFailException(
                f"pipeline package {self.pipeline_package} does not exist; compile the pipeline first "
                "(include/pipelines: compile_pipeline(path)) or pass pipeline_compiler"
            )
        result = self._execute_local(context) if self.hook.is_local else self.execute_resumable(context)
        result["mlflow_run_id"] = self._link_mlflow_run(context, result.get("outputs") or {})
        return result

    def _check_arguments(self) -> None:
        arguments = self.arguments or {}
        secret = credential_parameters(arguments)
        if secret:  # the value is not repeated: it holds the secret
            raise AirflowFailException(
                f"pipeline parameter(s) {', '.join(secret)} carry credentials (user:password@ in a URL); parameters "
                "are stored with the run, so pass credentials through a Connection instead"
            )
        if not self.hook.is_local:
            local = worker_local_parameters(arguments)
            if local:
                raise AirflowFailException(
                    "remote Kubeflow run: pipeline parameter(s) "
                    + ", ".join(f"{name}={arguments[name]!r}" for name in local)
                    + " name files on the Airflow worker, which the cluster's pods cannot read; pass content or "
                    "a URI they can reach (the lake: EVERGREEN_LAKE_URI=s3://...; MLflow: an mlflow_default "
                    "Connection to a server)"
                )

    def _step_environment(self) -> dict[str, str]:
        """Environment for the local runner's steps: the MLflow Connection's credentials, if it has any."""
        if not self.mlflow_conn_id:
            return {}
        from evergreen.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id).credentials_env()

    def _compile(self, context: Context) -> str:
        from airflow.sdk.module_loading import import_string

        module, _, func = self.pipeline_compiler.partition(":")
        compile_fn = import_string(f"{module}.{func}" if func else module)
        folder = self._task_folder(context) / "packages"
        folder.mkdir(parents=True, exist_ok=True)
        path = Path(compile_fn(str(folder / f"try-{context['ti'].try_number}.yaml")))
        self.log.info("Compiled the pipeline with %s to %s", self.pipeline_compiler, path)
        return str(path)

    def _derived_run_name(self, context: Context) -> str:
        ti = context["ti"]
        return run_name_for(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))

    # --- local mode -----------------------------------------------------------------------------------

    def _local_root(self, context: Context) -> Path:
        return Path(self.pipeline_root) if self.pipeline_root else self._task_folder(context)

    @staticmethod
    def _task_folder(context: Context) -> Path:
        """One folder per task instance on this worker (every try under it): a retry finds an earlier try's result."""
        ti = context["ti"]
        parts = [ti.dag_id, ti.run_id, ti.task_id]
        if getattr(ti, "map_index", -1) not in (None, -1):
            parts.append(str(ti.map_index))
        return home().kubeflow.joinpath("local", *(_safe(p) for p in parts))

    def _execute_local(self, context: Context) -> dict[str, Any]:
        root = self._local_root(context)
        previous = self._previous_local_success(root)
        if previous is not None:
            self.log.info("An earlier try of this task already ran the pipeline successfully (%s); reusing its result",
                          previous["run_dir"])
            return self._local_result(previous)
        attempt = root / f"try-{context['ti'].try_number}"
        runner = LocalRunner(self.pipeline_package, self.arguments or {}, attempt,
                             environment=self._step_environment(), memory_limit_mb=self.memory_limit_mb,
                             logger=self.log)
        self.kfp_run_url = attempt.resolve().as_uri()
        self.log.info("Running pipeline %s locally (kfp.local SubprocessRunner) under %s",
                      self.pipeline_package, attempt)
        self._runner = runner
        try:
            result = runner.run(lambda line: self.log.info("%s", line))
        finally:
            self._runner = None
        if result is None:
            raise AirflowException(
                f"the local Kubeflow runner {runner.describe_exit()} before reporting a result "
                f"(pipeline {self.pipeline_package}); last output:\n" + "\n".join(runner.tail)
            )
        if result["state"] != RESULT_SUCCEEDED:
            where = f" in task '{result['failed_task']}'" if result.get("failed_task") else ""
            error = result["error"]
            if self.memory_limit_mb and str(error).startswith("MemoryError"):
                error = f"{error} (the runner is limited to memory_limit_mb={self.memory_limit_mb})"
            raise AirflowFailException(
                f"Kubeflow pipeline '{result.get('pipeline', self.pipeline_package)}' failed{where}: {error}"
            )
        return self._local_result(result)

    def _previous_local_success(self, root: Path) -> dict[str, Any] | None:
        for result_file in sorted(root.glob(f"try-*/{RESULT_FILE}")):
            result = json.loads(result_file.read_text())
            if result.get("state") == RESULT_SUCCEEDED:
                return result
        return None

    def _local_result(self, result: dict[str, Any]) -> dict[str, Any]:
        run_dir = result.get("run_dir")
        self.kfp_run_id = result.get("local_run")
        if run_dir:
            self.kfp_run_url = Path(run_dir).as_uri()
        return {
            "mode": "local",
            "run_id": result.get("local_run"),
            "run_name": self.run_name,
            "state": result["state"],
            "url": self.kfp_run_url,
            "outputs": result.get("outputs") or {},
            "duration_s": result.get("duration_s"),
        }

    # --- remote mode (ResumableJobMixin) --------------------------------------------------------------

    def submit_job(self, context: Context) -> str:
        """Find this task instance's run by name (a try that died before recording it) or submit it."""
        client = self.hook.get_conn()
        experiment = client.create_experiment(name=self.experiment_name)
        existing = self._runs_named(experiment.experiment_id, self.run_name)
        for run in existing:
            if _state(run) not in FINAL_STATES or _state(run) == "SUCCEEDED":
                self.log.info("Kubeflow run %s (%s, %s) was submitted by an earlier try; re-attaching",
                              self.run_name, run.run_id, _state(run))
                return run.run_id
        if existing:
            self.log.info("Earlier runs named %s ended %s; submitting a new one", self.run_name,
                          ", ".join(_state(r) for r in existing))
        if self.upload_pipeline and self.enable_caching is None:
            pipeline_id, version_id = self._pipeline_version(client)
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=self.run_name,
                pipeline_id=pipeline_id,
                version_id=version_id,
                params=self.arguments or {},
                pipeline_root=self.pipeline_root,
                service_account=self.service_account,
            )
        else:
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=self.run_name,
                pipeline_package_path=self.pipeline_package,
                params=self.arguments or {},
                pipeline_root=self.pipeline_root,
                enable_caching=self.enable_caching,
                service_account=self.service_account,
            )
        self.log.info("Submitted Kubeflow run %s (%s) in experiment %s",
                      self.run_name, run.run_id, self.experiment_name)
        return run.run_id

    def _runs_named(self, experiment_id: str, name: str) -> list[Any]:
        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": name}]})
        response = self.hook.get_conn().list_runs(
            experiment_id=experiment_id, filter=flt, sort_by="created_at desc", page_size=20
        )
        return list(response.runs or [])

    def _pipeline_version(self, client: Any) -> tuple[str, str]:
        """Upload the package once per content: pipeline = its pipelineInfo name, version = name + content hash."""
        import yaml

        data = Path(self.pipeline_package).read_bytes()
        doc = next(d for d in yaml.safe_load_all(data) if d)
        name = (doc.get("pipelineInfo") or {}).get("name") or Path(self.pipeline_package).stem
        version_name = f"{name}-{hashlib.sha256(data).hexdigest()[:12]}"
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(self.pipeline_package, pipeline_name=name).pipeline_id
        flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": version_name}]})
        versions = client.list_pipeline_versions(pipeline_id=pipeline_id, filter=flt).pipeline_versions or []
        if versions:
            return pipeline_id, versions[0].pipeline_version_id
        version = client.upload_pipeline_version(self.pipeline_package, version_name, pipeline_id=pipeline_id)
        self.log.info("Uploaded pipeline version %s (%s)", version_name, version.pipeline_version_id)
        return pipeline_id, version.pipeline_version_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        from kfp_server_api import ApiException

        try:
            return _state(self.hook.get_conn().get_run(str(external_id)))
        except ApiException as exc:
            if exc.status == 404:
                return "NOT_FOUND"  # deleted on the cluster: neither active nor succeeded, so it is resubmitted
            raise

    def is_job_active(self, status: str) -> bool:
        return status not in FINAL_STATES and status != "NOT_FOUND"

    def is_job_succeeded(self, status: str) -> bool:
        return status == "SUCCEEDED"

    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:
        """Poll until a final state; raise unless SUCCEEDED.

        Returns the result too: the mixin returns this method's value when it re-attaches to a running job.
        """
        self.kfp_run_id = str(external_id)
        self.kfp_run_url = f"{self.hook.host.rstrip('/')}/#/runs/details/{self.kfp_run_id}"
        client = self.hook.get_conn()
        last = None
        while True:
            run = client.get_run(self.kfp_run_id)
            state = _state(run)
            if state != last:
                self.log.info("Kubeflow run %s (%s): %s", self.run_name, self.kfp_run_id, state)
                last = state
            if state in FINAL_STATES:
                break
            time.sleep(self.poll_interval)
        if state == "SUCCEEDED":
            return self._remote_result(run)
        message = self._remote_error(run)
        if state == "SKIPPED":
            raise AirflowSkipException(f"Kubeflow run {self.run_name} ({self.kfp_run_id}) was skipped{message}")
        if state == "ERROR":  # a system error of the cluster: worth a retry
            raise AirflowException(f"Kubeflow run {self.run_name} ({self.kfp_run_id}) ended in ERROR{message}")
        raise AirflowFailException(f"Kubeflow run {self.run_name} ({self.kfp_run_id}) {state}{message}")

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        self.kfp_run_id = str(external_id)
        self.kfp_run_url = f"{self.hook.host.rstrip('/')}/#/runs/details/{self.kfp_run_id}"
        return self._remote_result(self.hook.get_conn().get_run(self.kfp_run_id))

    def _remote_result(self, run: Any) -> dict[str, Any]:
        # The run API does not return output parameter values (they live in ML Metadata); callers find what the
        # pipeline produced by its lineage (e.g. the MLflow model version tagged with this Airflow run).
        return {
            "mode": "remote",
            "run_id": run.run_id,
            "run_name": self.run_name,
            "state": _state(run),
            "url": self.kfp_run_url,
            "outputs": {},
        }

    @staticmethod
    def _remote_error(run: Any) -> str:
        parts = []
        if getattr(run, "error", None) is not None and getattr(run.error, "message", None):
            parts.append(run.error.message)
        details = getattr(run, "run_details", None)
        for task in getattr(details, "task_details", None) or []:
            error = getattr(task, "error", None)
            if _state(task) in ("FAILED", "ERROR") and error is not None and getattr(error, "message", None):
                parts.append(f"task '{task.display_name}': {error.message}")
        return (": " + "; ".join(parts)) if parts else ""

    # --- both modes -----------------------------------------------------------------------------------

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.stop()
        elif self.kfp_run_id and not self.hook.is_local:
            self.log.warning("Terminating Kubeflow run %s (%s)", self.run_name, self.kfp_run_id)
            self.hook.get_conn().terminate_run(self.kfp_run_id)

    def _link_mlflow_run(self, context: Context, outputs: dict[str, Any]) -> str | None:
        """The MLflow run of this pipeline run: a ``mlflow_run_id`` output, else the run tagged with this DAG run."""
        run_id = outputs.get("mlflow_run_id") if isinstance(outputs.get("mlflow_run_id"), str) else None
        base = self.mlflow_base_url
        if not self.mlflow_conn_id or (run_id is None and not self.mlflow_experiment):
            return None
        try:
            from evergreen.hooks.mlflow import MlflowHook

            mlflow = MlflowHook(mlflow_conn_id=self.mlflow_conn_id)
            client = mlflow.get_conn()
            if run_id is None:
                experiment = client.get_experiment_by_name(self.mlflow_experiment)
                if experiment is None:
                    return None
                ti = context["ti"]
                runs = client.search_runs(
                    [experiment.experiment_id],
                    filter_string=f"tags.`{TAG}airflow_dag_id` = {quote(ti.dag_id)} "
                    f"and tags.`{TAG}airflow_run_id` = {quote(ti.run_id)}",
                    order_by=["attributes.start_time DESC"],
                    max_results=1,
                )
                if not runs:
                    return None
                run_id = runs[0].info.run_id
            if base is None:  # never the tracking URI: a link is for people, and is kept in XCom and records
                from evergreen.config import get_config

                base = get_config().platform.mlflow_base_url
            if base:
                from evergreen.links import mlflow_run_url

                self.mlflow_run_url = mlflow_run_url(base, client.get_run(run_id).info.experiment_id, run_id)
        except Exception:  # a link is a convenience: never fail a finished training for it
            self.log.warning("Could not resolve the MLflow run for the link", exc_info=True)
        return run_id
