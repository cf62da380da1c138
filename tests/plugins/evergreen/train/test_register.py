"""evergreen.train.register: registration in MLflow (real SQLite tracking store and registry under the session's
EVERGREEN_HOME). The pipeline itself (kfp.local) is tested in tests/include/pipelines/test_training_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from evergreen.train import register, spec, steps


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


def test_rerun_of_the_same_airflow_run_reuses_its_version(model, direct_run, lake_root, window, mlflow_target, client, tmp_path):
    before = len(client.search_model_versions("name='churn'"))
    again = steps.run_training(
        model, window, mlflow_target, holdout_path=tmp_path / "h.parquet", lake_root=lake_root,
        airflow_dag_id="retrain_churn", airflow_run_id="manual__2026-11-06",
    )
    assert again.registered.reused and again.registered.version == direct_run.registered.version
    assert len(client.search_model_versions("name='churn'")) == before
    found = register.find_registered_version(client, "churn", airflow_run_id="manual__2026-11-06")
    assert str(found.version) == direct_run.registered.version


def test_below_the_sanity_floor_nothing_is_registered(model, direct_run, lake_root, window, mlflow_target, client, tmp_path):
    strict = dataclasses.replace(model, training=dataclasses.replace(model.training, sanity_floor=0.999))
    before = len(client.search_model_versions("name='churn'"))
    result = steps.run_training(strict, window, mlflow_target, holdout_path=tmp_path / "h.parquet",
                                lake_root=lake_root, airflow_run_id="manual__strict")
    assert result.registered is None and not result.evaluation.passed
    assert len(client.search_model_versions("name='churn'")) == before
    lineage = register.Lineage(window, result.prepared.fingerprint, "unused", len(result.prepared.train), {})
    with pytest.raises(spec.TrainingError, match="2026-11-02/2026-11-06: holdout roc_auc=.* missed training.sanity_floor=0.999"):
        register.register(strict, spec.train(strict, result.prepared.train), result.evaluation, lineage,
                          mlflow_target, result.prepared.holdout)
