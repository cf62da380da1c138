"""evergreen.train.modelio: model files are skops only, loaded with the platform's trust list, from a file or from
the registry (real SQLite MLflow store).
"""

from __future__ import annotations

import numpy as np
import pytest

from evergreen import tracking
from evergreen.train import evaluate, modelio, register


# --- model files: skops only, platform trust list ---------------------------------------------------------------


def test_model_file_round_trip_needs_only_platform_trusted_types(model, prepared, fitted, tmp_path):
    trusted = modelio.save_model_file(fitted, tmp_path / "m.skops")
    assert set(trusted) <= modelio.TRUSTED_TYPES and "sklearn.tree._tree.Tree" in trusted
    back = modelio.load_model_file(tmp_path / "m.skops")
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
    with pytest.raises(modelio.UntrustedModelError, match=r"does not trust: \S*_double"):
        modelio.model_bytes(pipe)
    (tmp_path / "custom.skops").write_bytes(sio.dumps(pipe))
    with pytest.raises(modelio.UntrustedModelError, match="refusing to load"):
        modelio.load_model_file(tmp_path / "custom.skops")
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(LogisticRegression()))
    with pytest.raises(modelio.UntrustedModelError, match="not a skops model file"):
        modelio.load_model_file(tmp_path / "model.pkl")


# --- registered versions: loaded without pickle -----------------------------------------------------------------


def test_registered_version_loads_without_pickle_and_predicts(model, direct_run, mlflow_target, monkeypatch):
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = modelio.load_model(direct_run.registered.model_uri, mlflow_target)
    X = direct_run.prepared.holdout[model.feature_names]
    score = loaded.predict_proba(X)[:, 1]
    assert evaluate.metric_value("roc_auc", direct_run.prepared.holdout["label"].to_numpy(), score, score > 0.5, 1) == pytest.approx(
        direct_run.evaluation.value
    )
    with register.fluent_mlflow(mlflow_target):
        info = Model.load(direct_run.registered.model_uri)
        flavor = info.flavors["sklearn"]
        assert flavor["serialization_format"] == "skops"
        assert set(flavor["skops_trusted_types"]) <= modelio.TRUSTED_TYPES
        assert [c["name"] for c in info.signature.inputs.to_dict()] == model.feature_names
        assert info.saved_input_example_info is not None
        # MLflow's own loader refuses every format with the switch off: that is why the platform has its loader.
        with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
            mlflow.sklearn.load_model(direct_run.registered.model_uri)


def test_platform_loader_refuses_a_pickled_registered_model(mlflow_target, client, monkeypatch):
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    experiment_id = tracking.get_or_create_experiment(client, "evergreen/test/pickled", mlflow_target.artifact_location)
    with register.fluent_mlflow(mlflow_target), mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), name="m",
                                        serialization_format="pickle", pip_requirements=["scikit-learn"])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # even when MLflow would allow it
    with pytest.raises(modelio.UntrustedModelError, match="serialization format 'pickle'; Evergreen loads only skops"):
        modelio.load_model(info.model_uri, mlflow_target)
