"""evergreen.training: the logic the training pipeline's components call, tested in one process.

The MLflow tests use a real SQLite tracking store and registry under the session's EVERGREEN_HOME. The pipeline
itself (kfp.local) is tested in tests/include/pipelines/test_training_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from evergreen import lake, training
from evergreen_demo import simulate
from evergreen.config import load_config
from evergreen.paths import REPO_ROOT

FIRST = dt.date(2026, 11, 1)  # first simulated scoring day; its outcomes land on 2026-11-02
DAYS = 6
ROWS_PER_DAY = 500


def _fast(model):
    """The demo model with a small forest and thresholds sized for a few thousand rows."""
    spec = dataclasses.replace(
        model.training, hyperparameters={"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 5}, min_rows=400
    )
    return dataclasses.replace(model, training=spec)


@pytest.fixture(scope="module")
def model():
    return _fast(load_config(REPO_ROOT / "include" / "config").model("churn"))


def write_lake(model, root: str, first: dt.date, days: int, rows: int, **kwargs) -> None:
    for i in range(days):
        day = first + dt.timedelta(days=i)
        frame = simulate.labelled_frame(model, simulate.simulate_day(model, day, rows, **kwargs))
        lake.write_parquet_atomic(frame, lake.labelled_path(model.name, day + dt.timedelta(days=1), root))


@pytest.fixture(scope="module")
def lake_root(model, tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("lake"))
    write_lake(model, root, FIRST, DAYS, ROWS_PER_DAY)
    return root


@pytest.fixture(scope="module")
def window() -> training.Window:
    return training.Window.parse("2026-11-02", "2026-11-06")  # four lake days


@pytest.fixture(scope="module")
def prepared(model, lake_root, window) -> training.Prepared:
    return training.prepare(model, window, lake_root=lake_root)


@pytest.fixture(scope="module")
def fitted(model, prepared):
    return training.train(model, prepared.train)


# --- windows, split, fingerprint ----------------------------------------------------------------------------


def test_window_parse_rejects_reversed_and_malformed_windows():
    assert training.Window.parse("2026-11-02", "2026-11-06").tag == "2026-11-02/2026-11-06"
    with pytest.raises(training.TrainingDataError, match=r"2026-11-06/2026-11-02.*end must be after start"):
        training.Window.parse("2026-11-06", "2026-11-02")
    with pytest.raises(training.TrainingDataError, match=r"'2026-13-01/2026-11-02'.*YYYY-MM-DD"):
        training.Window.parse("2026-13-01", "2026-11-02")


def test_holdout_split_depends_only_on_the_request_id():
    ids = pd.Series([f"churn-20261101-{i:07d}" for i in range(20_000)])
    mask = training.holdout_mask(ids, 0.2)
    assert 0.18 < mask.mean() < 0.22
    shuffled = ids.sample(frac=1.0, random_state=1)
    again = pd.Series(training.holdout_mask(shuffled, 0.2), index=shuffled.index).sort_index().to_numpy()
    assert (again == mask).all()  # row order does not matter
    subset = ids.iloc[::7]
    assert (training.holdout_mask(subset, 0.2) == mask[::7]).all()  # nor do the other rows of the window
    assert (training.holdout_mask(ids, 0.3) >= mask).all()  # a larger holdout only adds rows


def test_fingerprint_changes_with_any_value():
    frame = pd.DataFrame({"request_id": ["a", "b"], "label": [0, 1], "x": [1.0, None]})
    assert training.fingerprint(frame) == training.fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "x"] = 2.0
    assert training.fingerprint(changed) != training.fingerprint(frame)
    relabelled = frame.copy()
    relabelled.loc[0, "label"] = 1
    assert training.fingerprint(relabelled) != training.fingerprint(frame)


def test_prepare_reads_exactly_the_window_and_splits_by_request_id(model, lake_root, window, prepared):
    assert len(prepared.partitions) == 4
    assert [p.rsplit("dt=", 1)[1][:10] for p in prepared.partitions] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert len(prepared.train) + len(prepared.holdout) == 4 * ROWS_PER_DAY
    assert list(prepared.train.columns) == [*model.feature_names, "label"]
    assert {"request_id", "entity_id", "ts", "label", *model.feature_names} <= set(prepared.holdout.columns)
    # A later, overlapping window puts the shared rows on the same side: champion and challenger holdouts agree.
    later = training.prepare(model, training.Window.parse("2026-11-04", "2026-11-08"), lake_root=lake_root)
    shared = set(prepared.holdout["request_id"]) & set(later.holdout["request_id"])
    assert len(shared) == len(later.holdout[later.holdout["ts"] < pd.Timestamp("2026-11-05", tz="UTC")])
    assert later.fingerprint != prepared.fingerprint
    assert training.prepare(model, window, lake_root=lake_root).fingerprint == prepared.fingerprint


# --- the scikit-learn pipeline and its hyper-parameters ----------------------------------------------------------


def test_pipeline_follows_the_config_and_run_overrides(model):
    pipe = training.build_pipeline(model, '{"max_depth": 3}')
    est = pipe.named_steps["estimator"]
    assert type(est).__name__ == "RandomForestClassifier"
    assert (est.n_estimators, est.max_depth, est.min_samples_leaf) == (20, 3, 5)
    assert est.random_state == model.training.seed
    covered = [c for _, _, cols in pipe.named_steps["features"].transformers for c in cols]
    assert sorted(covered) == sorted(model.feature_names)
    assert training.resolve_hyperparameters(model, {"max_depth": 3}) == {"n_estimators": 20, "max_depth": 3, "min_samples_leaf": 5}


def test_fitted_pipeline_takes_raw_features_with_nulls_and_unknown_categories(model, prepared, fitted):
    rows = prepared.holdout[model.feature_names].head(3).copy()
    rows.loc[rows.index[0], "total_charges"] = np.nan  # nullable numeric
    rows["plan"] = rows["plan"].astype(object)
    rows.loc[rows.index[1], "plan"] = "enterprise"  # a plan introduced after training
    proba = fitted.predict_proba(rows)
    assert proba.shape == (3, 2) and np.isfinite(proba).all()


def test_unknown_hyperparameter_is_named_with_its_origin(model):
    with pytest.raises(training.HyperparameterError, match=r"'n_trees' \(from the run's hyper-parameter overrides\).*accepted: .*n_estimators"):
        training.build_estimator(model, {"n_trees": 10})
    bad_config = dataclasses.replace(model, training=dataclasses.replace(model.training, hyperparameters={"depth": 2}))
    with pytest.raises(training.HyperparameterError, match=r"'depth' \(from training.hyperparameters in .*churn.yaml\)"):
        training.build_estimator(bad_config)


def test_rejected_hyperparameter_value_is_named(model):
    with pytest.raises(training.HyperparameterError, match=r"'n_estimators'.*rejected by sklearn.ensemble.RandomForestClassifier.*Got -1"):
        training.build_estimator(model, '{"n_estimators": -1}')
    with pytest.raises(training.HyperparameterError, match="not valid JSON"):
        training.build_estimator(model, "{max_depth: 3}")
    with pytest.raises(training.HyperparameterError, match="expected a JSON object"):
        training.build_estimator(model, "[3]")


def test_unimportable_estimator_is_named(model):
    bad = dataclasses.replace(model, training=dataclasses.replace(model.training, estimator="sklearn.ensemble.Nope"))
    with pytest.raises(training.TrainingError, match=r"training.estimator 'sklearn.ensemble.Nope' cannot be imported"):
        training.build_pipeline(bad)


# --- bad training windows fail before any fitting -----------------------------------------------------------------


def test_empty_window_names_the_window(model, lake_root):
    with pytest.raises(training.TrainingDataError, match=r"training window 2027-01-01/2027-01-05 of model 'churn': no labelled partitions"):
        training.prepare(model, training.Window.parse("2027-01-01", "2027-01-05"), lake_root=lake_root)


def test_too_small_window_names_rows_and_minimum(model, lake_root):
    with pytest.raises(training.TrainingDataError, match=rf"training window 2026-11-02/2026-11-03 .*{ROWS_PER_DAY} labelled rows in 1 partition.*training.min_rows=600"):
        strict = dataclasses.replace(model, training=dataclasses.replace(model.training, min_rows=600))
        training.prepare(strict, training.Window.parse("2026-11-02", "2026-11-03"), lake_root=lake_root)


def test_single_class_window_is_refused(model, tmp_path):
    frame = simulate.labelled_frame(model, simulate.simulate_day(model, FIRST, 600))
    frame["label"] = 0
    lake.write_parquet_atomic(frame, lake.labelled_path(model.name, "2026-11-02", str(tmp_path)))
    with pytest.raises(training.TrainingDataError, match=r"training window 2026-11-02/2026-11-03 .*single class \(0\) in all 600 rows"):
        training.prepare(model, training.Window.parse("2026-11-02", "2026-11-03"), lake_root=str(tmp_path))


def test_partition_missing_a_feature_is_named(model, tmp_path):
    write_lake(model, str(tmp_path), FIRST, 2, 400)
    broken = lake.labelled_path(model.name, "2026-11-03", str(tmp_path))
    lake.write_parquet_atomic(lake.read_parquet(broken).drop(columns=["support_calls"]), broken)
    with pytest.raises(training.TrainingDataError, match=rf"partition {broken} \(training window 2026-11-02/2026-11-04\): column\(s\) support_calls missing"):
        training.prepare(model, training.Window.parse("2026-11-02", "2026-11-04"), lake_root=str(tmp_path))


def test_rejected_hyperparameter_fails_before_the_window_is_read(model, tmp_path):
    # The lake is empty: a hyper-parameter error must come first, so a bad retrain request fails in seconds.
    with pytest.raises(training.HyperparameterError, match="'max_depth'"):
        training.prepare(model, training.Window.parse("2026-11-02", "2026-11-04"), lake_root=str(tmp_path),
                         hyperparameters={"max_depth": "deep"})


# --- evaluation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss", "f1"])
def test_weighted_metric_with_unit_weights_matches_scikit_learn(metric):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    score = np.round(np.clip(0.3 * y + rng.random(3000) * 0.7, 0, 1), 2)  # rounded: many tied scores
    pred = (score >= 0.5).astype(int)
    expected = training.metric_value(metric, y, score, pred, 1)
    got = training.weighted_metric_fn(metric, y, score, pred, 1)(np.ones(3000))
    assert got == pytest.approx(expected, rel=1e-9)
    # a weight of 2 is the same as the row appearing twice
    w = rng.integers(0, 3, 3000)
    rep = np.repeat(np.arange(3000), w)
    assert training.weighted_metric_fn(metric, y, score, pred, 1)(w.astype(float)) == pytest.approx(
        training.metric_value(metric, y[rep], score[rep], pred[rep], 1), rel=1e-9
    )


def test_evaluate_reports_ci_slices_and_the_floor(model, prepared, fitted):
    ev = training.evaluate(model, fitted, prepared.holdout)
    assert ev.metric == "roc_auc" and ev.rows == len(prepared.holdout)
    assert ev.ci_low < ev.value < ev.ci_high
    assert ev.passed == (ev.value >= model.training.sanity_floor)
    assert training.evaluate(model, fitted, prepared.holdout).to_json() == ev.to_json()  # fixed bootstrap seed
    for feature in model.training.slices:
        rows = [s for s in ev.slices if s.feature == feature]
        assert {s.value for s in rows} == set(model.feature(feature).categories)
        assert sum(s.rows for s in rows) == ev.rows
    assert training.Evaluation.from_json(ev.to_json()) == ev


def test_numeric_slices_use_quartiles_and_sanity_floor_can_fail(model, prepared, fitted):
    strict = dataclasses.replace(
        model, training=dataclasses.replace(model.training, slices=("tenure_months",), sanity_floor=0.999)
    )
    ev = training.evaluate(strict, fitted, prepared.holdout)
    assert not ev.passed
    assert len(ev.slices) == 4 and sum(s.rows for s in ev.slices) == ev.rows


# --- model files: skops only, platform trust list -----------------------------------------------------------------


def test_model_file_round_trip_needs_only_platform_trusted_types(model, prepared, fitted, tmp_path):
    trusted = training.save_model_file(fitted, tmp_path / "m.skops")
    assert set(trusted) <= training.TRUSTED_TYPES and "sklearn.tree._tree.Tree" in trusted
    back = training.load_model_file(tmp_path / "m.skops")
    X = prepared.holdout[model.feature_names]
    assert np.array_equal(back.predict_proba(X), fitted.predict_proba(X))


def _double(x):
    return 2 * x


def test_model_with_untrusted_types_is_refused_at_save_and_load(tmp_path):
    import pickle

    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(_double), LogisticRegression()).fit(np.random.rand(50, 2), [0, 1] * 25)
    with pytest.raises(training.UntrustedModelError, match=r"does not trust: \S*_double"):
        training.model_bytes(pipe)
    (tmp_path / "custom.skops").write_bytes(sio.dumps(pipe))
    with pytest.raises(training.UntrustedModelError, match="refusing to load"):
        training.load_model_file(tmp_path / "custom.skops")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(LogisticRegression()))
    with pytest.raises(training.UntrustedModelError, match="not a skops model file"):
        training.load_model_file(tmp_path / "model.pkl")


# --- registration in MLflow (real SQLite store) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_target(tmp_path_factory) -> training.MlflowTarget:
    root = tmp_path_factory.mktemp("mlflow")
    return training.MlflowTarget(f"sqlite:///{root / 'mlflow.db'}", "", (root / "artifacts").as_uri())


@pytest.fixture(scope="module")
def client(mlflow_target):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_target.tracking_uri, registry_uri=mlflow_target.tracking_uri)


@pytest.fixture(scope="module")
def direct_run(model, lake_root, window, mlflow_target, tmp_path_factory) -> training.TrainingResult:
    return training.run_training(
        model, window, mlflow_target, holdout_path=tmp_path_factory.mktemp("holdout") / "holdout.parquet",
        lake_root=lake_root, airflow_dag_id="retrain_churn", airflow_run_id="manual__2026-11-06", kfp_run_id="kfp-1",
    )


def test_run_training_registers_a_candidate_with_lineage(model, direct_run, client, window):
    reg = direct_run.registered
    assert reg is not None
    version = client.get_model_version("churn", reg.version)
    tags = version.tags
    ev = direct_run.evaluation
    assert tags["evergreen.status"] == "candidate"
    assert tags["evergreen.airflow_dag_id"] == "retrain_churn"
    assert tags["evergreen.airflow_run_id"] == "manual__2026-11-06"
    assert tags["evergreen.kfp_run_id"] == "kfp-1"
    assert tags["evergreen.training_window"] == "2026-11-02/2026-11-06"
    assert tags["evergreen.data_fingerprint"] == direct_run.prepared.fingerprint
    assert float(tags["evergreen.metric.roc_auc"]) == pytest.approx(ev.value)
    assert float(tags["evergreen.metric.roc_auc_ci_low"]) == pytest.approx(ev.ci_low)
    assert json.loads(tags["evergreen.hyperparameters"]) == {"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 5}
    holdout = pd.read_parquet(tags["evergreen.holdout_uri"])
    assert sorted(holdout["request_id"]) == sorted(direct_run.prepared.holdout["request_id"])
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "evergreen/churn/training"
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(ev.value)
    assert run.data.metrics["holdout_roc_auc_ci_low"] == pytest.approx(ev.ci_low)
    assert run.data.metrics["holdout_roc_auc_ci_high"] == pytest.approx(ev.ci_high)
    assert "holdout_roc_auc.plan.basic" in run.data.metrics
    assert client.get_registered_model("churn").aliases == {}  # registering never moves an alias


def test_registered_version_loads_without_pickle_and_predicts(model, direct_run, mlflow_target, monkeypatch):
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = training.load_model(direct_run.registered.model_uri, mlflow_target)
    X = direct_run.prepared.holdout[model.feature_names]
    score = loaded.predict_proba(X)[:, 1]
    assert training.metric_value("roc_auc", direct_run.prepared.holdout["label"].to_numpy(), score, score > 0.5, 1) == pytest.approx(
        direct_run.evaluation.value
    )
    with training._fluent_mlflow(mlflow_target):
        info = Model.load(direct_run.registered.model_uri)
        flavor = info.flavors["sklearn"]
        assert flavor["serialization_format"] == "skops"
        assert set(flavor["skops_trusted_types"]) <= training.TRUSTED_TYPES
        assert [c["name"] for c in info.signature.inputs.to_dict()] == model.feature_names
        assert info.saved_input_example_info is not None
        # MLflow's own loader refuses every format with the switch off: that is why the platform has its loader.
        with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
            mlflow.sklearn.load_model(direct_run.registered.model_uri)


def test_rerun_of_the_same_airflow_run_reuses_its_version(model, direct_run, lake_root, window, mlflow_target, client, tmp_path):
    before = len(client.search_model_versions("name='churn'"))
    again = training.run_training(
        model, window, mlflow_target, holdout_path=tmp_path / "h.parquet", lake_root=lake_root,
        airflow_dag_id="retrain_churn", airflow_run_id="manual__2026-11-06",
    )
    assert again.registered.reused and again.registered.version == direct_run.registered.version
    assert len(client.search_model_versions("name='churn'")) == before
    found = training.find_registered_version(client, "churn", airflow_run_id="manual__2026-11-06")
    assert str(found.version) == direct_run.registered.version


def test_below_the_sanity_floor_nothing_is_registered(model, direct_run, lake_root, window, mlflow_target, client, tmp_path):
    strict = dataclasses.replace(model, training=dataclasses.replace(model.training, sanity_floor=0.999))
    before = len(client.search_model_versions("name='churn'"))
    result = training.run_training(strict, window, mlflow_target, holdout_path=tmp_path / "h.parquet",
                                   lake_root=lake_root, airflow_run_id="manual__strict")
    assert result.registered is None and not result.evaluation.passed
    assert len(client.search_model_versions("name='churn'")) == before
    lineage = training.Lineage(window, result.prepared.fingerprint, "unused", len(result.prepared.train), {})
    with pytest.raises(training.TrainingError, match="2026-11-02/2026-11-06: holdout roc_auc=.* missed training.sanity_floor=0.999"):
        training.register(strict, training.train(strict, result.prepared.train), result.evaluation, lineage,
                          mlflow_target, result.prepared.holdout)


def test_platform_loader_refuses_a_pickled_registered_model(mlflow_target, client, monkeypatch):
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    experiment_id = training._experiment_id(client, "evergreen/test/pickled", mlflow_target.artifact_location)
    with training._fluent_mlflow(mlflow_target), mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="m",
                                        serialization_format="pickle", pip_requirements=["scikit-learn"])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # even when MLflow would allow it
    with pytest.raises(training.UntrustedModelError, match="serialization format 'pickle'; Evergreen loads only skops"):
        training.load_model(info.model_uri, mlflow_target)


def test_pipeline_module_compiles_from_the_package(tmp_path):
    path = training.compile_training_pipeline(tmp_path / "training.yaml")
    assert "evergreen-training" in open(path).read()
