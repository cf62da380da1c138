"""The training pipeline, compiled to KFP IR and run for real through kfp.local (SubprocessRunner).

Each component runs in its own subprocess with the venv's interpreter, so these tests exercise exactly what the
Kubeflow operator runs in local mode, against a real MLflow SQLite store and a lake written by the simulator. The
model config reaches the steps as content (the ``model_config`` parameter), never as a folder of this machine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evergreen import lake
from evergreen_demo import simulate
from evergreen.config import load_config
from evergreen.paths import REPO_ROOT, home
from evergreen.train import data, evaluate, modelio, register, steps
from evergreen.train.spec import TrainingError

pytestmark = pytest.mark.slow

FIRST = dt.date(2026, 11, 1)
ROWS_PER_DAY = 400
FAST = {"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 5}


def _config_dir(root: Path, **training_overrides) -> str:
    """A copy of the demo config with a small forest (and any other training settings) for fast runs."""
    doc = yaml.safe_load((REPO_ROOT / "include" / "config" / "churn.yaml").read_text())
    doc["models"]["churn"]["training"].update({"hyperparameters": FAST, "min_rows": 300, **training_overrides})
    root.mkdir(parents=True, exist_ok=True)
    (root / "churn.yaml").write_text(yaml.safe_dump(doc))
    return str(root)


def _content(config_dir: str) -> str:
    """The ``model_config`` parameter for the churn model of a config folder (what the retrain DAG passes)."""
    return steps.model_config_content(load_config(config_dir).model("churn"))


def _write_day(model, root: str, scoring_day: dt.date, rows: int, edit=None) -> str:
    frame = simulate.labelled_frame(model, simulate.simulate_day(model, scoring_day, rows))
    if edit is not None:
        frame = edit(frame)
    return lake.write_parquet_atomic(frame, lake.labelled_path(model.name, scoring_day + dt.timedelta(days=1), root))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Config dirs, a good and a bad lake, two MLflow stores, and kfp.local with caching ON.

    Caching is switched on in the runner on purpose: the pipeline itself must keep old results from coming back.
    """
    from kfp import local
    from kfp.local import config as local_config
    from mlflow import MlflowClient

    saved = os.environ["PATH"], local_config.LocalExecutionConfig.instance
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    tmp = tmp_path_factory.mktemp("training-pipeline")
    config_dir = _config_dir(tmp / "config")
    model = load_config(config_dir).model("churn")
    good_lake = str(tmp / "lake")
    for i in range(8):  # lake days 2026-11-02 .. 2026-11-09
        _write_day(model, good_lake, FIRST + dt.timedelta(days=i), ROWS_PER_DAY)
    bad_lake = str(tmp / "bad-lake")
    _write_day(model, bad_lake, dt.date(2026, 12, 1), 100)  # dt=2026-12-02: fewer rows than min_rows
    _write_day(model, bad_lake, dt.date(2026, 12, 2), 500, lambda f: f.assign(label=0))  # dt=2026-12-03: one class
    missing = _write_day(model, bad_lake, dt.date(2026, 12, 3), 500, lambda f: f.drop(columns=["plan"]))  # dt=12-04

    h = home()
    h.mlflow.mkdir(parents=True, exist_ok=True)
    main_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    empty_uri = f"sqlite:///{tmp / 'mlflow-empty.db'}"
    empty_client = MlflowClient(tracking_uri=empty_uri, registry_uri=empty_uri)
    assert empty_client.search_registered_models() == []  # creates the store once, for the no-register cases
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(h.kubeflow),
        enable_caching=True,
        cache_root=str(tmp / "kfp-cache"),
    )
    yield {
        "model": model,
        "config_dir": config_dir,
        "model_config": _content(config_dir),
        "strict_model_config": _content(_config_dir(tmp / "strict-config", sanity_floor=0.999)),
        "lake": good_lake,
        "bad_lake": bad_lake,
        "missing_partition": missing,
        "main_uri": main_uri,
        "empty_uri": empty_uri,
        "artifacts": (tmp / "artifacts").as_uri(),
        "client": MlflowClient(tracking_uri=main_uri, registry_uri=main_uri),
        "empty_client": empty_client,
        "yaml": steps.compile_training_pipeline(tmp / "training.yaml"),
    }
    # kfp.local's session is process-global: leave the next test module the state it would have found.
    os.environ["PATH"], local_config.LocalExecutionConfig.instance = saved


def _args(env, start: str, end: str, **overrides) -> dict:
    args = {
        "model": "churn",
        "window_start": start,
        "window_end": end,
        "mlflow_tracking_uri": env["main_uri"],
        "mlflow_artifact_location": env["artifacts"],
        "lake_root": env["lake"],
        "model_config": env["model_config"],
        "airflow_dag_id": "retrain_churn",
    }
    return {**args, **overrides}


def _run(args: dict, compiled: str | None = None) -> str:
    if compiled is None:
        return steps.pipeline_module().training_pipeline(**args).output
    from kfp import components

    return components.load_component_from_file(compiled)(**args).output


# --- the compiled IR -------------------------------------------------------------------------------------------


def test_compiles_to_ir_that_loads_back_with_its_interface(env):
    from kfp import components

    pipeline = components.load_component_from_file(env["yaml"])
    inputs = pipeline.component_spec.inputs
    assert set(inputs) == {
        "model", "window_start", "window_end", "model_config", "hyperparameters", "mlflow_tracking_uri",
        "mlflow_registry_uri", "mlflow_artifact_location", "lake_root", "airflow_dag_id", "airflow_run_id",
        "kfp_run_id",
    }
    assert all(spec.type == "String" for spec in inputs.values())
    required = {name for name, spec in inputs.items() if not spec.optional}
    assert required == {"model", "window_start", "window_end", "model_config", "mlflow_tracking_uri", "lake_root"}
    assert inputs["hyperparameters"].default == "{}"
    assert list(pipeline.component_spec.outputs) == ["Output"]
    ir = yaml.safe_load(Path(env["yaml"]).read_text())
    tasks = {**ir["root"]["dag"]["tasks"]}
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    assert {"prepare", "train", "evaluate", "register", "below-floor"} <= set(tasks)
    for name, task in tasks.items():
        if "componentRef" in task and not task["componentRef"]["name"].startswith("comp-condition"):
            assert not task.get("cachingOptions", {}).get("enableCache"), f"caching is on for {name}"
    for name, executor in ir["deploymentSpec"]["executors"].items():
        env_vars = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env_vars.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") == "false", name
    # register runs only under dsl.If(decision == 'register'), below-floor under its dsl.Else.
    guards = {}
    for comp in ir["components"].values():
        for task in comp.get("dag", {}).get("tasks", {}).values():
            inner = ir["components"][task["componentRef"]["name"]].get("dag", {}).get("tasks", {})
            for name in inner:
                guards[name] = task.get("triggerPolicy", {}).get("condition", "")
    assert guards["register"] == "inputs.parameter_values['pipelinechannel--evaluate-decision'] == 'register'"
    assert guards["below-floor"] == "!(" + guards["register"] + ")"


def test_steps_run_in_the_project_image_by_default():
    """Without EVERGREEN_PIPELINE_IMAGE the steps run in the image docker-compose.yaml builds from the Dockerfile
    (it carries the evergreen package and kfp), not a bare Python image."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "EVERGREEN_PIPELINE_IMAGE"}
    code = ("import sys, yaml; from evergreen.train import steps; p = steps.compile_training_pipeline(sys.argv[1]); "
            "ir = yaml.safe_load(open(p)); "
            "print(sorted({e['container']['image'] for e in ir['deploymentSpec']['executors'].values()}))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(os.environ["EVERGREEN_HOME"]) / "image-check.yaml")],
                         env=env, capture_output=True, text=True, check=True).stdout
    compose = (REPO_ROOT / "docker-compose.yaml").read_text()
    assert "image: ${EVERGREEN_IMAGE:-evergreen:latest}" in compose
    assert out.strip() == "['evergreen:latest']"
    assert steps.pipeline_module().DEFAULT_IMAGE == "evergreen:latest"


def test_model_config_travels_as_content_and_reads_back_equal(env):
    model = load_config(env["config_dir"]).model("churn")
    content = steps.model_config_content(model)
    assert env["config_dir"] not in content  # the folder of this machine is not part of it
    loaded = steps.load_model_config("churn", content)
    assert loaded == dataclasses.replace(model, source=loaded.source)
    assert loaded.source == "churn.yaml"  # named (outside the checkout: by file name) for messages only
    demo = load_config().model("churn")
    assert steps.load_model_config("churn", steps.model_config_content(demo)).source == "include/config/churn.yaml"


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "pipeline parameter model_config is not JSON"),
     ('{"models": {"churn": {"entity_id": "c"}}, "source": "include/config/churn.yaml"}',
      r"pipeline parameter model_config \(from include/config/churn.yaml\): models.churn.label: required field")],
    ids=["not json", "invalid block"],
)
def test_a_bad_model_config_names_the_parameter(content, message):
    with pytest.raises(TrainingError, match=message):
        steps.load_model_config("churn", content)


# --- real runs through kfp.local --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bootstrap(env):
    """The first retrain ever: no registered model, no champion; trains from the available history."""
    from mlflow.exceptions import MlflowException

    client = env["client"]
    assert client.search_registered_models() == []
    version = _run(_args(env, "2026-11-02", "2026-11-05", airflow_run_id="manual__a"))
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("churn", "champion")
    return version


def test_bootstrap_registers_a_candidate_with_lineage(env, bootstrap):
    client = env["client"]
    assert bootstrap == "1"
    v = client.get_model_version("churn", bootstrap)
    tags = v.tags
    assert tags["evergreen.status"] == "candidate"
    assert tags["evergreen.airflow_dag_id"] == "retrain_churn"
    assert tags["evergreen.airflow_run_id"] == "manual__a"
    assert tags["evergreen.kfp_run_id"]  # the local run's job id when the caller passes none
    assert tags["evergreen.training_window"] == "2026-11-02/2026-11-05"
    assert re.fullmatch(r"[0-9a-f]{64}", tags["evergreen.data_fingerprint"])
    holdout = pd.read_parquet(tags["evergreen.holdout_uri"])
    # kept in the lake, where Airflow, a cluster and a person can read it (not in the runner's pipeline root)
    assert tags["evergreen.holdout_uri"] == steps.holdout_uri("churn", tags["evergreen.data_fingerprint"], env["lake"])
    assert int(tags["evergreen.holdout_rows"]) == len(holdout)
    assert int(tags["evergreen.training_rows"]) + len(holdout) == 3 * ROWS_PER_DAY
    # out of time: the holdout is the window's last training.holdout_days=1 day, the model trained on the days before
    assert (tags["evergreen.holdout_days"], tags["evergreen.holdout_window"]) == ("1", "2026-11-04/2026-11-05")
    assert (int(tags["evergreen.training_rows"]), len(holdout)) == (2 * ROWS_PER_DAY, ROWS_PER_DAY)
    last_day = lake.read_parquet(lake.labelled_path("churn", "2026-11-04", env["lake"]))
    assert holdout["request_id"].tolist() == last_day["request_id"].tolist()
    run = client.get_run(v.run_id)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(float(tags["evergreen.metric.roc_auc"]))
    assert run.data.metrics["holdout_roc_auc_ci_low"] < run.data.metrics["holdout_roc_auc"] < run.data.metrics["holdout_roc_auc_ci_high"]
    assert client.get_experiment(run.info.experiment_id).name == "evergreen/churn/training"
    assert client.get_registered_model("churn").aliases == {}
    found = register.find_registered_version(client, "churn", airflow_run_id="manual__a")
    assert str(found.version) == bootstrap
    assert str(register.find_registered_version(client, "churn", kfp_run_id=tags["evergreen.kfp_run_id"]).version) == bootstrap


def test_registered_version_has_its_reference_built_from_its_training_rows(env, bootstrap):
    """register built the drift reference from prepare's training split -- the rows the model was fitted on -- and
    stored it with the version's data fingerprint under the lake's reference dir; the version names it."""
    from evergreen.monitor.reference import build_reference, load_reference

    model = env["model"]
    tags = env["client"].get_model_version("churn", bootstrap).tags
    uri = tags["evergreen.reference_uri"]
    assert uri == lake.reference_dir("churn", bootstrap, env["lake"])
    ref = load_reference(uri)
    assert (ref.version, ref.source, ref.data_fingerprint) == (bootstrap, "training_rows",
                                                               tags["evergreen.data_fingerprint"])
    assert ref.n_rows == int(tags["evergreen.training_rows"])  # the training split, not the whole window
    # exactly the statistics of prepare's training rows (the lake has not changed since the run)
    prepared = data.prepare(model, data.Window.parse("2026-11-02", "2026-11-05"), lake_root=env["lake"])
    assert prepared.fingerprint == ref.data_fingerprint
    expected = build_reference(prepared.train, model, model.drift.report_sample_size, version=bootstrap)
    for name, stats in expected.features.items():
        got = ref.features[name]
        assert (got.kind, got.n, got.n_null) == (stats.kind, stats.n, stats.n_null), name
        assert got.values.tolist() == stats.values.tolist() and got.weights.tolist() == stats.weights.tolist(), name
    pd.testing.assert_frame_equal(ref.sample, expected.sample)


def test_registered_version_loads_with_pickle_switched_off_and_predicts(env, bootstrap, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    target = register.MlflowTarget(env["main_uri"])
    loaded = modelio.load_model(f"models:/churn/{bootstrap}", target)
    tags = env["client"].get_model_version("churn", bootstrap).tags
    holdout = pd.read_parquet(tags["evergreen.holdout_uri"])
    score = loaded.predict_proba(holdout[env["model"].feature_names])[:, 1]
    auc = evaluate.metric_value("roc_auc", holdout["label"].to_numpy(), score, score > 0.5, 1)
    assert auc == pytest.approx(float(tags["evergreen.metric.roc_auc"]))


def test_new_window_and_changed_data_give_new_versions_despite_caching(env, bootstrap):
    client = env["client"]
    # A later window, through the compiled YAML (what the operator submits).
    second = _run(_args(env, "2026-11-05", "2026-11-08", airflow_run_id="manual__b"), compiled=env["yaml"])
    assert second == "2"
    # The same arguments as the bootstrap run, after a day of that window was re-ingested with other labels:
    # a cached prepare would hand back the old data and the old model.
    day = lake.labelled_path("churn", "2026-11-03", env["lake"])
    frame = lake.read_parquet(day)
    # (a tenth of its labels: 2026-11-03 is a training day now, and a wholly flipped day would train a model under
    # the sanity floor, which registers nothing)
    relabelled = frame["label"].where(frame.index % 10 != 0, 1 - frame["label"])
    lake.write_parquet_atomic(frame.assign(label=relabelled), day)
    third = _run(_args(env, "2026-11-02", "2026-11-05", airflow_run_id="manual__a"))
    assert third == "3"
    versions = {v: client.get_model_version("churn", v) for v in (bootstrap, second, third)}
    prints = {v: mv.tags["evergreen.data_fingerprint"] for v, mv in versions.items()}
    assert len(set(prints.values())) == 3
    assert len({mv.source for mv in versions.values()}) == 3
    assert versions[second].tags["evergreen.training_window"] == "2026-11-05/2026-11-08"
    assert all(mv.tags["evergreen.status"] == "candidate" for mv in versions.values())


def test_sanity_floor_miss_completes_and_registers_nothing(env):
    out = _run(_args(env, "2026-11-02", "2026-11-05", model_config=env["strict_model_config"],
                     mlflow_tracking_uri=env["empty_uri"]))
    assert out == ""
    assert env["empty_client"].search_model_versions("name='churn'") == []


# --- bad input: fail fast in prepare, name the thing, register nothing ---------------------------------------------


@pytest.mark.parametrize(
    ("window", "lake_key", "hyperparameters", "expected"),
    [
        (("2027-01-01", "2027-01-04"), "lake", "{}",
         r"training window 2027-01-01/2027-01-04 of model 'churn': no labelled partitions"),
        (("2026-12-02", "2026-12-03"), "bad_lake", "{}",
         r"training window 2026-12-02/2026-12-03 of model 'churn': 100 labelled rows in 1 partition\(s\), fewer than training.min_rows=300"),
        (("2026-12-03", "2026-12-04"), "bad_lake", "{}",
         r"training window 2026-12-03/2026-12-04 of model 'churn': label 'churned' has a single class \(0\)"),
        (("2026-12-04", "2026-12-05"), "bad_lake", "{}", "MISSING"),
        (("2026-11-02", "2026-11-05"), "lake", '{"n_estimators": 0}',
         r"hyper-parameter 'n_estimators' \(from the run's hyper-parameter overrides\) rejected by sklearn.ensemble.RandomForestClassifier"),
    ],
    ids=["empty-window", "too-small", "single-class", "missing-feature", "rejected-hyperparameter"],
)
def test_bad_input_fails_fast_naming_the_cause(env, capfd, window, lake_key, hyperparameters, expected):
    if expected == "MISSING":
        expected = rf"partition {re.escape(env['missing_partition'])} \(training window 2026-12-04/2026-12-05\): column\(s\) plan missing"
    args = _args(env, *window, lake_root=env[lake_key], hyperparameters=hyperparameters,
                 mlflow_tracking_uri=env["empty_uri"], airflow_run_id=f"bad__{window[0]}")
    with pytest.raises(RuntimeError, match="Inner task failed: .*prepare"):
        _run(args)
    log = capfd.readouterr()
    assert re.search(expected, log.out + log.err), (log.out + log.err)[-3000:]
    assert "Executing task \x1b[96m'train'" not in log.out + log.err  # failed in prepare, nothing fitted
    assert env["empty_client"].search_registered_models() == []
    assert env["empty_client"].search_model_versions("name='churn'") == []
