"""evergreen.train.spec: the scikit-learn pipeline and its hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys

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


# --- bounded inputs: which estimator is imported at all, and which hyper-parameter values reach it -----------------

PLANTED = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")


from sklearn.base import BaseEstimator, ClassifierMixin


class Classifier(ClassifierMixin, BaseEstimator):
    def __init__(self, depth=3):
        self.depth = depth

    def fit(self, X, y):
        return self

    def predict_proba(self, X):
        return X
'''


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A module on sys.path that leaves a marker file when it is imported, and every import_module call made."""
    name = f"evergreen_planted_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    calls: list[str] = []
    real = spec.importlib.import_module

    def recording(module, *args, **kwargs):
        calls.append(module)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(spec.importlib, "import_module", recording)
    yield name, marker, calls
    sys.modules.pop(name, None)


def _with(model, estimator: str, *, listed: tuple[str, ...] = (), hyperparameters: dict | None = None):
    training = dataclasses.replace(model.training, estimator=estimator,
                                   hyperparameters=model.training.hyperparameters if hyperparameters is None
                                   else hyperparameters)
    return dataclasses.replace(model, training=training, **({"platform_estimators": listed} if listed else {}))


@pytest.mark.parametrize("path", ["os.system", "subprocess.Popen", "builtins.eval", "sklearnx.Thing", "PLANTED"])
def test_estimator_outside_scikit_learn_is_refused_without_importing_it(model, planted, path):
    name, marker, calls = planted
    path = f"{name}.Classifier" if path == "PLANTED" else path
    with pytest.raises(spec.TrainingError, match=rf"training.estimator: '{path}' is not allowed: not a scikit-learn "
                                                 r"estimator; .*platform.allowed_estimators \(none listed\)"):
        spec.build_estimator(_with(model, path, hyperparameters={}))
    assert calls == [] and not marker.exists() and name not in sys.modules


@pytest.mark.parametrize(("path", "message"), [
    ("sklearn.utils.shuffle", "is not a classifier"),  # a function
    ("sklearn.base.BaseEstimator", "is not a classifier"),
    ("sklearn.linear_model.LinearRegression", "is not a classifier"),  # a regressor
    ("sklearn.cluster.KMeans", "is not a classifier"),
    ("sklearn.utils.Bunch", "is not a classifier"),  # a class, not an estimator
    ("sklearn.multiclass.OneVsRestClassifier", "cannot be built without arguments"),
    ("sklearn.ensemble._forest.RandomForestClassifier", "'_forest' is private to scikit-learn"),
])
def test_scikit_learn_path_that_is_not_a_plain_classifier_is_refused(model, planted, path, message):
    _, _, calls = planted
    with pytest.raises(spec.TrainingError, match=rf"training.estimator.*'{path}'.*{message}"):
        spec.build_estimator(_with(model, path, hyperparameters={}))
    assert all(module == "sklearn" or module.startswith("sklearn.") for module in calls), calls


def test_scikit_learn_classifiers_build(model):
    for path in ("sklearn.linear_model.LogisticRegression", "sklearn.ensemble.HistGradientBoostingClassifier"):
        assert type(spec.build_estimator(_with(model, path, hyperparameters={}))).__name__ == path.rsplit(".", 1)[1]


def test_platform_listed_estimator_is_imported_and_checked(model, planted):
    name, marker, _ = planted
    path = f"{name}.Classifier"
    estimator = spec.build_estimator(_with(model, path, listed=(path,), hyperparameters={"depth": 5}))
    assert (type(estimator).__name__, estimator.depth, marker.exists()) == ("Classifier", 5, True)
    with pytest.raises(spec.HyperparameterError, match=rf"'n_estimators'.*not accepted by {path}; accepted: depth"):
        spec.build_estimator(_with(model, path, listed=(path,), hyperparameters={"n_estimators": 5}))


@pytest.mark.parametrize("value", [{"__class__": "os.system"}, [1, {"a": 2}], [[1]], dt.date(2026, 1, 1)])
def test_hyperparameter_value_that_is_not_flat_json_is_refused_by_name(model, value):
    with pytest.raises(spec.HyperparameterError, match=r"hyper-parameter 'max_depth' \(from the run's hyper-parameter "
                                                       r"overrides\): .* is not allowed; expected a string, number"):
        spec.check_hyperparameters(model, {"max_depth": value})


def test_check_hyperparameters_returns_the_overrides_the_estimator_accepts(model):
    assert spec.check_hyperparameters(model, '{"max_depth": 4, "class_weight": "balanced"}') == {
        "max_depth": 4, "class_weight": "balanced"}
    assert spec.check_hyperparameters(model, None) == {}
    with pytest.raises(spec.HyperparameterError, match=r"'max_depth'.*rejected by .*RandomForestClassifier"):
        spec.check_hyperparameters(model, {"max_depth": -3})
    with pytest.raises(spec.HyperparameterError, match=r"'criterion'.*rejected by .*Got 'os.system'"):
        spec.check_hyperparameters(model, {"criterion": "os.system"})
