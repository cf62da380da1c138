"""The compiled predictor answers exactly what ``pipeline.predict_proba`` answers (bit for bit, any batch size, nulls
included), falls back to the pipeline for what it does not know, and is never used when its probe disagrees."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest

from evergreen.config import get_config
from evergreen.serve import compiled
from evergreen.serve.compiled import CompiledPipeline, Predictor, compile_pipeline, frame, probe_columns

MODEL = get_config().model("churn")


def fitted(**hyperparameters):
    """The config's pipeline (build_pipeline) fitted on simulated churn days."""
    from evergreen.train.spec import build_pipeline
    from evergreen_demo import simulate

    days = [simulate.labelled_frame(MODEL, simulate.simulate_day(MODEL, dt.date(2026, 11, 1) + dt.timedelta(days=i),
                                                                 800)) for i in range(3)]
    train = pd.concat(days, ignore_index=True)
    pipeline = build_pipeline(MODEL, hyperparameters)
    pipeline.fit(train[MODEL.feature_names], train["label"].to_numpy())
    return pipeline


@pytest.fixture(scope="module")
def forest():
    """The bench's model shape: 100 trees, depth 8."""
    return fitted(n_estimators=100, max_depth=8, min_samples_leaf=5)


def records_frame(n: int, seed: str) -> pd.DataFrame:
    """Feature rows as a client's records become a frame (ints, floats with NaN, strings, bools)."""
    from evergreen_demo import simulate

    return simulate.feature_frame(MODEL, n, seed)


def as_columns(X: pd.DataFrame) -> dict:
    """The columns the contract's parse gives (float64 numbers, bools and categories as objects)."""
    return {f.name: (X[f.name].to_numpy(dtype=np.float64) if f.type in ("int", "float")
                     else X[f.name].astype(object).where(X[f.name].notna(), None).to_numpy(dtype=object))
            for f in MODEL.features}


@pytest.mark.parametrize("n", [1, 2, 8, 63, 500])
def test_the_compiled_forest_is_bit_identical_to_predict_proba(forest, n):
    predictor = compile_pipeline(MODEL, forest)
    assert isinstance(predictor, CompiledPipeline)
    X = records_frame(n, f"compiled-{n}")
    if n >= 63:
        assert X["total_charges"].isna().any()  # nulls go through the imputer's statistics
    got = predictor.predict_proba(as_columns(X))
    expected = forest.predict_proba(X)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)  # exact, not approximately


def test_the_registrys_versions_compile_and_agree_exactly(registry):
    for version, pipeline in registry.pipelines.items():
        predictor = compile_pipeline(MODEL, pipeline)
        assert predictor.compiled, f"version {version} was not compiled"
        X = records_frame(300, f"registry-{version}")
        assert np.array_equal(predictor.predict_proba(as_columns(X)), pipeline.predict_proba(X))


def test_the_probe_covers_every_category_null_and_bound():
    probe = probe_columns(MODEL)
    for spec in MODEL.features:
        values = probe[spec.name]
        if spec.type == "category":
            assert set(values) == set(spec.categories) | ({None} if spec.nullable else set())
        elif spec.type == "bool":
            assert set(values) == {False, True} | ({None} if spec.nullable else set())
        else:
            assert values.dtype == np.float64
            assert np.isnan(values).any() == bool(spec.nullable)
            if spec.min is not None:
                assert np.nanmin(values) == spec.min
            if spec.max is not None:
                assert np.nanmax(values) == spec.max


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # scikit-learn's own cast
def test_a_value_float32_cannot_hold_gets_scikit_learns_own_error(forest):
    """1e300 is a valid total_charges (no maximum): the forest's float32 check refuses it, as it always did."""
    predictor = compile_pipeline(MODEL, forest)
    X = records_frame(3, "huge")
    X.loc[1, "total_charges"] = 1e300
    with pytest.raises(ValueError) as expected:
        forest.predict_proba(X)
    with pytest.raises(ValueError) as got:
        predictor.predict_proba(as_columns(X))
    assert str(got.value) == str(expected.value)


def test_a_category_outside_the_table_is_scored_by_the_pipeline(forest):
    predictor = compile_pipeline(MODEL, forest)
    X = records_frame(4, "unknown")
    X["plan"] = X["plan"].astype(object)
    X.loc[2, "plan"] = "enterprise"  # the contract refuses it; the encoder (handle_unknown=ignore) would not
    assert np.array_equal(predictor.predict_proba(as_columns(X)), forest.predict_proba(X))


def test_a_multi_job_forest_keeps_its_own_predict_proba(forest):
    """More jobs sum the trees in the order the threads finish: that forest is called as fitted, not compiled."""
    import copy

    threaded = copy.deepcopy(forest)
    threaded.steps[-1][1].n_jobs = 2
    assert compiled._forest(threaded.steps[-1][1]) is None
    predictor = compile_pipeline(MODEL, threaded)
    X = records_frame(20, "threads")
    np.testing.assert_allclose(predictor.predict_proba(as_columns(X)), forest.predict_proba(X), rtol=1e-12)


def test_another_estimator_is_called_as_fitted_after_the_compiled_features():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    base = fitted(n_estimators=5)  # its fitted features step
    X = records_frame(400, "logistic")
    y = (X["tenure_months"] < 24).astype(int).to_numpy()
    logistic = Pipeline([("features", base.steps[0][1]), ("estimator", LogisticRegression(max_iter=500))])
    logistic.fit(X, y)
    predictor = compile_pipeline(MODEL, logistic)
    assert predictor.compiled
    assert np.array_equal(predictor.predict_proba(as_columns(X)), logistic.predict_proba(X))


def test_what_is_not_a_known_pipeline_is_served_by_its_own_predict_proba():
    class Model:
        classes_ = np.array([0, 1])

        def predict_proba(self, X):
            assert isinstance(X, pd.DataFrame) and list(X.columns) == MODEL.feature_names
            return np.column_stack([np.zeros(len(X)), np.ones(len(X))])

    predictor = compile_pipeline(MODEL, Model())
    assert type(predictor) is Predictor and not predictor.compiled
    assert predictor.predict_proba(as_columns(records_frame(2, "stub"))).tolist() == [[0.0, 1.0]] * 2


def test_a_compiled_predictor_that_disagrees_on_the_probe_is_not_used(forest, monkeypatch, caplog):
    real = compiled._forest

    def off_by_a_little(estimator):
        estimate = real(estimator)
        return lambda X: estimate(X) * (1 + 1e-15)

    monkeypatch.setattr(compiled, "_forest", off_by_a_little)
    with caplog.at_level(logging.WARNING, logger="evergreen.serve.compiled"):
        predictor = compile_pipeline(MODEL, forest)
    assert type(predictor) is Predictor
    assert "does not reproduce predict_proba exactly" in caplog.text
    X = records_frame(5, "fallback")
    assert np.array_equal(predictor.predict_proba(as_columns(X)), forest.predict_proba(frame(MODEL, as_columns(X))))
