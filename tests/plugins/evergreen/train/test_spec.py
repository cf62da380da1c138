"""evergreen.train.spec: the scikit-learn pipeline and its hyper-parameters.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from evergreen.train import spec


def test_pipeline_follows_the_config_and_run_overrides(model):
    pipe = spec.build_pipeline(model, '{"max_depth": 3}')
    est = pipe.named_steps["estimator"]
    assert type(est).__name__ == "RandomForestClassifier"
    assert (est.n_estimators, est.max_depth, est.min_samples_leaf) == (20, 3, 5)
    assert est.random_state == model.training.seed
    covered = [c for _, _, cols in pipe.named_steps["features"].transformers for c in cols]
    assert sorted(covered) == sorted(model.feature_names)
    assert spec.resolve_hyperparameters(model, {"max_depth": 3}) == {"n_estimators": 20, "max_depth": 3, "min_samples_leaf": 5}


def test_fitted_pipeline_takes_raw_features_with_nulls_and_unknown_categories(model, prepared, fitted):
    rows = prepared.holdout[model.feature_names].head(3).copy()
    rows.loc[rows.index[0], "total_charges"] = np.nan  # nullable numeric
    rows["plan"] = rows["plan"].astype(object)
    rows.loc[rows.index[1], "plan"] = "enterprise"  # a plan introduced after training
    proba = fitted.predict_proba(rows)
    assert proba.shape == (3, 2) and np.isfinite(proba).all()


def test_unknown_hyperparameter_is_named_with_its_origin(model):
    with pytest.raises(spec.HyperparameterError, match=r"'n_trees' \(from the run's hyper-parameter overrides\).*accepted: .*n_estimators"):
        spec.build_estimator(model, {"n_trees": 10})
    bad_config = dataclasses.replace(model, training=dataclasses.replace(model.training, hyperparameters={"depth": 2}))
    with pytest.raises(spec.HyperparameterError, match=r"'depth' \(from training.hyperparameters in .*churn.yaml\)"):
        spec.build_estimator(bad_config)


def test_rejected_hyperparameter_value_is_named(model):
    with pytest.raises(spec.HyperparameterError, match=r"'n_estimators'.*rejected by sklearn.ensemble.RandomForestClassifier.*Got -1"):
        spec.build_estimator(model, '{"n_estimators": -1}')
    with pytest.raises(spec.HyperparameterError, match="not valid JSON"):
        spec.build_estimator(model, "{max_depth: 3}")
    with pytest.raises(spec.HyperparameterError, match="expected a JSON object"):
        spec.build_estimator(model, "[3]")


def test_unimportable_estimator_is_named(model):
    bad = dataclasses.replace(model, training=dataclasses.replace(model.training, estimator="sklearn.ensemble.Nope"))
    with pytest.raises(spec.TrainingError, match=r"training.estimator 'sklearn.ensemble.Nope' cannot be imported"):
        spec.build_pipeline(bad)
