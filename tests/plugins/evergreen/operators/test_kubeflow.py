"""KubeflowPipelineOperator in real DAG runs: local mode through kfp.local for real, remote mode against a fake
Kubeflow Pipelines API server on localhost (tests/fakes/kfp_api.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from dag_helpers import START, manual_run_id, xcom
from fakes.kfp_api import FakeKfpApiServer

from evergreen.operators.kubeflow import FINAL_STATES, KubeflowPipelineOperator, run_name_for

pytestmark = pytest.mark.slow


def make_dag(dag_id: str, *, retries: int = 0, **operator_kwargs):
    from airflow.sdk import DAG

    with DAG(
        dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        default_args={"retries": retries, "retry_delay": dt.timedelta(seconds=0)},
    ) as dag:
        KubeflowPipelineOperator(task_id="train", **operator_kwargs)
    return dag


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not running either
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


# --- local mode --------------------------------------------------------------------------------------


def test_local_run_returns_pipeline_outputs_and_links(run_test_dag, tiny_packages):
    dag = make_dag("kfp_local_ok", pipeline_package=tiny_packages["add"], arguments={"a": 3, "b": 4})
    run = run_test_dag(dag)

    assert run.get_task_instance("train").state == "success"
    result = xcom(run, "train")
    assert result["mode"] == "local" and result["state"] == "SUCCEEDED"
    assert result["outputs"] == {"Output": "total is 7"}
    assert result["run_name"] == run_name_for("kfp_local_ok", run.run_id, "train")
    # the Kubeflow link points at the local run's folder, which holds the component outputs
    link = xcom(run, "train", "_link_KubeflowRunLink")
    run_dir = Path(link.removeprefix("file://"))
    assert run_dir.is_dir() and run_dir.name == result["run_id"]
    assert (run_dir / "describe" / "report").read_text() == "total=7\n"
    assert str(run_dir).startswith(os.environ["EVERGREEN_HOME"])


def test_local_component_error_fails_fast_with_the_component_message(run_test_dag, tiny_packages, capfd):
    dag = make_dag("kfp_local_bad", retries=2, pipeline_package=tiny_packages["add"], arguments={"a": -3, "b": 4})
    run = run_test_dag(dag)

    ti = run.get_task_instance("train")
    assert ti.state == "failed"
    assert ti.try_number == 1  # bad input is not retried: the same arguments would fail again
    log = "".join(capfd.readouterr())
    assert (
        "AirflowFailException: Kubeflow pipeline 'tiny-add' failed in task 'add': "
        "ValueError: parameter 'a' must be >= 0, got -3" in log
    )


def test_local_rerun_of_a_succeeded_task_reuses_its_result(run_test_dag, tiny_packages):
    when = START + dt.timedelta(days=3)
    dag = make_dag("kfp_local_rerun", pipeline_package=tiny_packages["add"], arguments={"a": 1, "b": 1})
    first = xcom(run_test_dag(dag, when), "train")
    second = xcom(run_test_dag(dag, when), "train")  # same DAG run id: a clear/re-run of the same task instance

    assert second["run_id"] == first["run_id"]
    root = Path(first["url"].removeprefix("file://")).parent.parent
    assert len([p for p in root.glob("try-*/*") if p.is_dir()]) == 1  # the pipeline ran once


def test_local_timeout_kills_the_runner_and_its_components(run_test_dag, tiny_packages, tmp_path):
    pid_file = tmp_path / "component.pid"
    dag = make_dag(
        "kfp_local_kill",
        pipeline_package=tiny_packages["sleep"],
        arguments={"seconds": 120.0, "pid_file": str(pid_file)},
        execution_timeout=dt.timedelta(seconds=6),
    )
    run = run_test_dag(dag)

    assert run.get_task_instance("train").state == "failed"
    pid = int(pid_file.read_text())  # the component started, then on_kill ended its process group
    assert not pid_alive(pid)


def test_local_sigterm_calls_on_kill_which_ends_the_pipeline(run_test_dag, tiny_packages, tmp_path, capfd):
    # What the supervisor does when a user marks the task failed: SIGTERM to the task process, whose handler
    # (installed by Airflow's task runner) calls on_kill. dag.test() runs the task in this process.
    import signal
    import threading
    import time

    pid_file = tmp_path / "component.pid"
    dag = make_dag("kfp_local_sigterm", pipeline_package=tiny_packages["sleep"],
                   arguments={"seconds": 120.0, "pid_file": str(pid_file)})

    def terminate_when_the_component_runs():
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=terminate_when_the_component_runs, daemon=True)
    killer.start()
    try:
        run = run_test_dag(dag)
    finally:
        killer.join()
        signal.signal(signal.SIGTERM, previous)

    assert run.get_task_instance("train").state == "failed"
    assert not pid_alive(int(pid_file.read_text()))
    assert "the local Kubeflow runner was killed by SIGTERM before reporting a result" in "".join(capfd.readouterr())


def test_local_memory_limit_fails_the_pipeline_not_the_worker(run_test_dag, tiny_packages, capfd):
    dag = make_dag(
        "kfp_local_oom",
        pipeline_package=tiny_packages["hog"],
        arguments={"megabytes": 3000},
        memory_limit_mb=1500,
    )
    run = run_test_dag(dag)

    assert run.get_task_instance("train").state == "failed"
    log = "".join(capfd.readouterr())
    assert "failed in task 'hog': MemoryError (the runner is limited to memory_limit_mb=1500)" in log


def test_missing_package_names_the_path(run_test_dag, tmp_path, capfd):
    missing = tmp_path / "nowhere.yaml"
    run = run_test_dag(make_dag("kfp_no_package", pipeline_package=str(missing)))

    assert run.get_task_instance("train").state == "failed"
    assert f"pipeline package {missing} does not exist" in "".join(capfd.readouterr())


# --- remote mode (fake KFP API) ------------------------------------------------------------------------


@pytest.fixture
def kfp(monkeypatch):
    with FakeKfpApiServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_FAKE", json.dumps({"conn_type": "kubeflow", "host": server.url}))
        yield server


def remote_dag(dag_id: str, package: str, **kwargs):
    kwargs.setdefault("arguments", {"a": 2, "b": 5})
    return make_dag(
        dag_id,
        pipeline_package=package,
        kubeflow_conn_id="kubeflow_fake",
        experiment_name="evergreen-tests",
        poll_interval=0.05,
        **kwargs,
    )


def test_remote_run_is_submitted_once_under_a_deterministic_name(run_test_dag, tiny_packages, kfp):
    run = run_test_dag(remote_dag("kfp_remote_ok", tiny_packages["add"]))

    assert run.get_task_instance("train").state == "success"
    name = run_name_for("kfp_remote_ok", manual_run_id(START), "train")
    (submitted,) = kfp.runs_named(name)
    assert submitted.parameters == {"a": 2, "b": 5}
    assert submitted.history[-1] == "SUCCEEDED"
    result = xcom(run, "train")
    assert (result["mode"], result["run_id"], result["state"]) == ("remote", submitted.run_id, "SUCCEEDED")
    assert xcom(run, "train", "_link_KubeflowRunLink") == f"{kfp.url}/#/runs/details/{submitted.run_id}"
    # the package was uploaded as a pipeline version named by its content hash, and the run references it
    version = kfp.versions[submitted.version_ref["pipeline_version_id"]]
    assert version["display_name"].startswith("tiny-add-")
    assert kfp.pipelines[version["pipeline_id"]]["display_name"] == "tiny-add"


def test_remote_same_package_is_uploaded_once(run_test_dag, tiny_packages, kfp):
    run_test_dag(remote_dag("kfp_remote_upload", tiny_packages["add"]), START)
    run_test_dag(remote_dag("kfp_remote_upload", tiny_packages["add"]), START + dt.timedelta(days=1))

    first, second = sorted(kfp.runs.values(), key=lambda r: r.created_at)
    assert first.version_ref == second.version_ref
    # one pipeline, one upload of this content (upload_pipeline's default version + the content-hash version)
    assert (kfp.calls("POST", "/pipelines/upload"), kfp.calls("POST", "/pipelines/upload_version")) == (1, 1)


def test_remote_failure_names_the_failed_task(run_test_dag, tiny_packages, kfp, capfd):
    kfp.run_plan = ["RUNNING", "FAILED"]
    kfp.run_error = ("training window 2026-11-01/2026-11-03 has 0 labelled rows", "prepare")
    run = run_test_dag(remote_dag("kfp_remote_fail", tiny_packages["add"], retries=2))

    ti = run.get_task_instance("train")
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert "task 'prepare': training window 2026-11-01/2026-11-03 has 0 labelled rows" in "".join(capfd.readouterr())


def test_remote_cancelled_run_is_final(run_test_dag, tiny_packages, kfp, capfd):
    kfp.run_plan = ["RUNNING", "CANCELED"]  # wait_for_run_completion would poll this run forever
    run = run_test_dag(remote_dag("kfp_remote_cancel", tiny_packages["add"], retries=1))

    ti = run.get_task_instance("train")
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert "CANCELED" in "".join(capfd.readouterr())
    assert "CANCELED" in FINAL_STATES


def test_remote_retry_reattaches_instead_of_resubmitting(run_test_dag, tiny_packages, kfp):
    # the first try submits, then loses the API (as a worker that dies while polling); the retry must find the
    # run it submitted through the task state store and poll it to the end
    kfp.run_plan = ["PENDING", "RUNNING", "RUNNING", "SUCCEEDED"]
    kfp.unavailable_get_run = 1
    run = run_test_dag(remote_dag("kfp_remote_retry", tiny_packages["add"], retries=1))

    ti = run.get_task_instance("train")
    assert (ti.state, ti.try_number) == ("success", 2)
    assert kfp.calls("POST", "/runs") == 1
    (only,) = kfp.runs.values()
    assert xcom(run, "train")["run_id"] == only.run_id and only.history[-1] == "SUCCEEDED"
    # found through Airflow's task state store (the ResumableJobMixin record), not only by name
    from airflow._shared.state import TaskScope
    from airflow.state import get_state_backend

    scope = TaskScope(dag_id="kfp_remote_retry", run_id=run.run_id, task_id="train")
    assert json.loads(get_state_backend().get(scope, "kfp_run_id")) == only.run_id


@pytest.mark.parametrize("earlier_state", ["RUNNING", "SUCCEEDED"])
def test_remote_run_submitted_by_a_dead_try_is_found_by_name(run_test_dag, tiny_packages, kfp, earlier_state):
    # a worker that died between submitting and recording the run id leaves only the run's name behind
    when = START + dt.timedelta(days=7)
    name = run_name_for("kfp_remote_adopt", manual_run_id(when), "train")
    earlier = kfp.add_run(name, "evergreen-tests", earlier_state, {"a": 2, "b": 5})
    earlier.plan = ["SUCCEEDED"]
    run = run_test_dag(remote_dag("kfp_remote_adopt", tiny_packages["add"]), when)

    assert run.get_task_instance("train").state == "success"
    assert kfp.calls("POST", "/runs") == 0
    assert xcom(run, "train")["run_id"] == earlier.run_id


def test_remote_failed_earlier_run_is_resubmitted(run_test_dag, tiny_packages, kfp):
    when = START + dt.timedelta(days=8)
    name = run_name_for("kfp_remote_again", manual_run_id(when), "train")
    kfp.add_run(name, "evergreen-tests", "FAILED")
    run = run_test_dag(remote_dag("kfp_remote_again", tiny_packages["add"]), when)

    assert run.get_task_instance("train").state == "success"
    assert [r.state for r in kfp.runs_named(name)] == ["FAILED", "SUCCEEDED"]


def test_remote_on_kill_terminates_the_run(run_test_dag, tiny_packages, kfp):
    kfp.run_plan = ["RUNNING"]  # never finishes by itself
    dag = remote_dag("kfp_remote_kill", tiny_packages["add"], execution_timeout=dt.timedelta(seconds=3))
    run = run_test_dag(dag)

    assert run.get_task_instance("train").state == "failed"
    (submitted,) = kfp.runs.values()
    assert kfp.calls("POST", f"/runs/{submitted.run_id}:terminate") == 1
    assert submitted.state in ("CANCELING", "CANCELED")


def test_remote_bad_parameter_is_rejected_by_the_server(run_test_dag, tiny_packages, kfp, capfd):
    run = run_test_dag(remote_dag("kfp_remote_badparam", tiny_packages["add"], arguments={"a": 1, "c": 2}))

    assert run.get_task_instance("train").state == "failed"
    assert not kfp.runs
    assert "unknown pipeline parameter(s) ['c']" in "".join(capfd.readouterr())


def test_remote_host_with_scheme_keeps_the_connection_port(run_test_dag, tiny_packages, monkeypatch):
    with FakeKfpApiServer() as server:
        host, port = server.url.rsplit(":", 1)
        monkeypatch.setenv("AIRFLOW_CONN_KUBEFLOW_SPLIT", json.dumps({"conn_type": "kubeflow", "host": host,
                                                                      "port": int(port)}))
        dag = make_dag("kfp_remote_port", pipeline_package=tiny_packages["add"], arguments={"a": 1, "b": 1},
                       kubeflow_conn_id="kubeflow_split", poll_interval=0.05)
        run = run_test_dag(dag)

        assert run.get_task_instance("train").state == "success"
        assert len(server.runs) == 1


# --- credentials and worker files never travel as parameters -------------------------------------------------

PASSWORD = "pl4nted-s3cret/pw"


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _is_local_path(value: str) -> bool:
    try:
        return Path(value).exists()
    except OSError:  # a long text (the model config) is no file name
        return False


def test_local_steps_get_mlflow_credentials_in_their_environment_not_in_the_arguments_file(
    run_test_dag, tiny_packages, monkeypatch
):
    import hashlib

    from evergreen.paths import home

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(
        {"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "login": "ops", "password": PASSWORD}))
    run = run_test_dag(make_dag("kfp_local_env", pipeline_package=tiny_packages["env"], arguments={"label": "x"}))

    assert run.get_task_instance("train").state == "success"
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert xcom(run, "train")["outputs"] == {"Output": f"ops:{digest}"}  # the step saw both
    folder = home().kubeflow / "local" / "kfp_local_env"
    (arguments,) = folder.rglob("arguments.json")
    assert json.loads(arguments.read_text()) == {"label": "x"}
    written = _files_under(folder)
    assert {p.name for p in written} >= {"arguments.json", "result.json", "executor_output.json"}
    assert not [p for p in written if PASSWORD.encode() in p.read_bytes()]


def test_a_parameter_carrying_credentials_fails_before_anything_runs(run_test_dag, tiny_packages, capfd):
    from evergreen.paths import home

    arguments = {"label": f"https://ops:{PASSWORD}@mlflow.internal"}
    run = run_test_dag(make_dag("kfp_local_secret", pipeline_package=tiny_packages["env"], arguments=arguments))

    assert run.get_task_instance("train").state == "failed"
    out = "".join(capfd.readouterr())
    assert "pipeline parameter(s) label carry credentials" in out
    assert not (home().kubeflow / "local" / "kfp_local_secret").exists()


@pytest.fixture
def remote_training(monkeypatch, kfp):
    """The retrain DAG's pipeline arguments for a cluster: an MLflow server with a planted password and an object
    store lake."""
    from types import SimpleNamespace

    from evergreen.hooks.mlflow import MlflowHook
    from evergreen.train.tasks import pipeline_arguments

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(
        {"conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "login": "ops", "password": PASSWORD}))

    def arguments(lake: str) -> dict:
        monkeypatch.setenv("EVERGREEN_LAKE_URI", lake)
        ti = SimpleNamespace(dag_id="retrain_churn", run_id="manual__2026-11-10")
        window = (dt.date(2026, 10, 11), dt.date(2026, 11, 10))
        return pipeline_arguments("churn", window, {"max_depth": 6}, {"ti": ti}, MlflowHook())

    return arguments


def training_dag(dag_id: str, arguments: dict):
    return make_dag(dag_id, pipeline_compiler="evergreen.train.steps:compile_training_pipeline",
                    arguments=arguments, kubeflow_conn_id="kubeflow_fake", experiment_name="evergreen-churn",
                    poll_interval=0.05)


def test_remote_training_run_holds_no_credential_and_no_worker_path(run_test_dag, kfp, remote_training):
    from evergreen.train.steps import pipeline_module

    arguments = remote_training("s3://evergreen-lake/lake")
    run = run_test_dag(training_dag("kfp_remote_training", arguments))

    assert run.get_task_instance("train").state == "success"
    (submitted,) = kfp.runs.values()
    # the fake server accepted them: every parameter is an input of the compiled pipeline, every required one set
    assert submitted.parameters == arguments
    spec = kfp.versions[submitted.version_ref["pipeline_version_id"]]["pipeline_spec"]
    defaults = {name: p.get("defaultValue") for name, p in spec["root"]["inputDefinitions"]["parameters"].items()}
    for name, value in {**defaults, **submitted.parameters}.items():
        if isinstance(value, str) and value:
            assert not value.startswith(("/", "~", "file:", "sqlite:")), (name, value)
            assert not _is_local_path(value), (name, value)
    assert submitted.parameters["lake_root"] == "s3://evergreen-lake/lake"
    assert submitted.parameters["mlflow_tracking_uri"] == "http://mlflow.internal:5000"
    assert submitted.parameters["model_config"].startswith("{")  # the config as content
    everything = json.dumps([submitted.parameters, spec, xcom(run, "train")])
    assert PASSWORD not in everything and "ops:" not in everything
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {pipeline_module().IMAGE}


def test_remote_run_with_a_worker_path_fails_naming_it_and_submits_nothing(
    run_test_dag, kfp, remote_training, capfd, tmp_path
):
    arguments = remote_training(str(tmp_path / "lake"))  # the embedded lake: a folder of this machine
    run = run_test_dag(training_dag("kfp_remote_worker_path", arguments))

    assert run.get_task_instance("train").state == "failed"
    assert not kfp.runs and kfp.calls("POST", "/pipelines/upload") == 0
    out = "".join(capfd.readouterr())
    assert f"remote Kubeflow run: pipeline parameter(s) lake_root='{tmp_path / 'lake'}' name files on the Airflow " \
           "worker" in out
    assert "EVERGREEN_LAKE_URI=s3://" in out
