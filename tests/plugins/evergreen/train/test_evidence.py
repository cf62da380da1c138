"""evergreen.train.evidence: the candidate's confusion matrix, curves and importances against scikit-learn itself,
and the evidence a register() run leaves in a real SQLite MLflow store."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn import metrics
from sklearn.inspection import permutation_importance

from evergreen.train import evidence, register, spec
from evergreen.train.data import Window
from evergreen.train.evaluate import evaluate
from evergreen.train.spec import LABEL

EXPECTED_ARTIFACTS = {
    "evidence/confusion_matrix.png", "evidence/roc_curve.png", "evidence/pr_curve.png",
    "evidence/feature_importance.png", "evidence/confusion_matrix.json", "evidence/roc_curve.json",
    "evidence/pr_curve.json", "evidence/feature_importance.json", "evidence/evidence.json",
}


def _with_estimator(model, estimator: str, hyperparameters: dict | None = None):
    training = dataclasses.replace(model.training, estimator=estimator, hyperparameters=hyperparameters or {})
    return dataclasses.replace(model, training=training)


def _truth(model, pipeline, holdout):
    positive = model.label.positive_class
    X = holdout[model.feature_names]
    y = (holdout[LABEL].to_numpy() == positive).astype(int)
    score = pipeline.predict_proba(X)[:, list(pipeline.classes_).index(positive)]
    pred = (pipeline.predict(X) == positive).astype(int)
    return y, score, pred


def test_candidate_evidence_matches_scikit_learn(model, fitted, prepared):
    holdout = prepared.holdout
    got = evidence.model_evidence(model, fitted, holdout)
    y, score, pred = _truth(model, fitted, holdout)
    tn, fp, fn, tp = metrics.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (got.confusion.tn, got.confusion.fp, got.confusion.fn, got.confusion.tp) == (tn, fp, fn, tp)
    assert got.confusion.labels == ("0", "1")
    assert got.metrics == pytest.approx({
        "accuracy": metrics.accuracy_score(y, pred), "precision": metrics.precision_score(y, pred),
        "recall": metrics.recall_score(y, pred), "f1": metrics.f1_score(y, pred),
        "roc_auc": metrics.roc_auc_score(y, score), "average_precision": metrics.average_precision_score(y, score),
        "log_loss": metrics.log_loss(y, score),
    })
    fpr, tpr, thr = metrics.roc_curve(y, score)
    assert len(fpr) <= evidence.MAX_CURVE_POINTS  # under the cap every point is kept
    assert [p[0] for p in got.roc] == pytest.approx(fpr) and [p[1] for p in got.roc] == pytest.approx(tpr)
    assert got.roc[0][2] is None and [p[2] for p in got.roc[1:]] == pytest.approx(thr[1:])  # inf has no JSON
    precision, recall, pthr = metrics.precision_recall_curve(y, score)
    assert [p[0] for p in got.pr] == pytest.approx(recall) and [p[1] for p in got.pr] == pytest.approx(precision)
    assert [p[2] for p in got.pr[:-1]] == pytest.approx(pthr) and got.pr[-1][2] is None


def test_the_positive_class_comes_from_the_label_spec(model, fitted, prepared):
    zero = dataclasses.replace(model, label=dataclasses.replace(model.label, positive=0))
    got = evidence.model_evidence(zero, fitted, prepared.holdout)
    y = prepared.holdout[LABEL].to_numpy()
    pred = fitted.predict(prepared.holdout[model.feature_names])
    assert got.confusion.labels == ("1", "0")
    assert got.confusion.tp == int(((y == 0) & (pred == 0)).sum())
    assert got.metrics["recall"] == pytest.approx(metrics.recall_score(y, pred, pos_label=0))


def test_curves_are_thinned_to_a_bounded_table_keeping_their_ends(model, fitted, prepared, monkeypatch):
    full = evidence.model_evidence(model, fitted, prepared.holdout)
    monkeypatch.setattr(evidence, "MAX_CURVE_POINTS", 10)
    thin = evidence.model_evidence(model, fitted, prepared.holdout)
    assert len(thin.roc) <= 10 and len(thin.pr) <= 10
    assert (thin.roc[0], thin.roc[-1]) == (full.roc[0], full.roc[-1])
    assert (thin.pr[0], thin.pr[-1]) == (full.pr[0], full.pr[-1])
    assert thin.metrics == full.metrics  # areas use every point


def _by_feature(model, pipeline, raw):
    names = pipeline.named_steps["features"].get_feature_names_out()
    out = dict.fromkeys(model.feature_names, 0.0)
    for name, value in zip(names, raw, strict=True):
        block, _, column = name.partition("__")
        out[column if block == "numeric" else block] += abs(value)
    return out


def test_tree_importances_are_mapped_back_to_the_config_features(model, fitted, prepared):
    got = evidence.feature_importance(model, fitted, prepared.holdout)
    assert got.method == "feature_importances_"
    assert list(got.values) == model.feature_names
    assert got.values == pytest.approx(_by_feature(model, fitted, fitted.steps[-1][1].feature_importances_))
    assert sum(got.values.values()) == pytest.approx(1.0)


def test_linear_coefficients_are_mapped_back_to_the_config_features(model, prepared):
    linear = _with_estimator(model, "sklearn.linear_model.LogisticRegression", {"max_iter": 500})
    pipeline = spec.train(linear, prepared.train)
    got = evidence.feature_importance(linear, pipeline, prepared.holdout)
    assert got.method == "coef_"
    assert got.values == pytest.approx(_by_feature(linear, pipeline, pipeline.steps[-1][1].coef_[0]))


def test_permutation_importance_where_the_estimator_has_none(model, prepared, monkeypatch):
    nb = _with_estimator(model, "sklearn.naive_bayes.GaussianNB")
    pipeline = spec.train(nb, prepared.train)
    monkeypatch.setattr(evidence, "PERMUTATION_ROWS", 300)  # the bounded, seeded sample
    got = evidence.feature_importance(nb, pipeline, prepared.holdout)
    assert got.method == "permutation" and got.rows == 300 and got.scoring == "roc_auc"
    rng = np.random.default_rng(nb.training.seed)
    sample = prepared.holdout.iloc[np.sort(rng.choice(len(prepared.holdout), 300, replace=False))]
    want = permutation_importance(pipeline, sample[nb.feature_names], sample[LABEL].to_numpy(), scoring="roc_auc",
                                  n_repeats=evidence.PERMUTATION_REPEATS, random_state=nb.training.seed)
    assert list(got.values.values()) == pytest.approx(want.importances_mean)
    assert list(got.std.values()) == pytest.approx(want.importances_std)
    assert got == evidence.feature_importance(nb, pipeline, prepared.holdout)  # fixed seed: same result


def test_champion_is_scored_on_the_same_rows_or_skipped_with_the_reason(model, fitted, prepared):
    nb = spec.train(_with_estimator(model, "sklearn.naive_bayes.GaussianNB"), prepared.train)
    both = evidence.collect_evidence(model, fitted, prepared.holdout, champion=nb)
    assert both.champion is not None and both.champion_note == "given by the caller"
    assert both.champion == evidence.model_evidence(model, nb, prepared.holdout, "champion")
    assert sum(map(sum, both.champion.confusion.matrix)) == both.rows == len(prepared.holdout)
    assert "champion_holdout_roc_auc" in evidence.evidence_metrics(both)

    class Broken:  # a champion trained on another feature schema, say
        classes_ = fitted.classes_

        def predict_proba(self, X):
            raise KeyError("column 'tenure' not found")

    alone = evidence.collect_evidence(model, fitted, prepared.holdout, champion=Broken())
    assert alone.champion is None and alone.candidate == both.candidate
    assert alone.champion_note.startswith("skipped: the champion (given by the caller) could not score the holdout")
    assert "KeyError" in alone.champion_note


def _register(model, prepared, fitted, target, run_id):
    lineage = register.Lineage(Window.parse("2026-11-02", "2026-11-06"), prepared.fingerprint, "unused",
                               len(prepared.train), {}, airflow_dag_id="retrain_churn", airflow_run_id=run_id)
    return register.register(model, fitted, evaluate(model, fitted, prepared.holdout), lineage, target,
                             prepared.holdout.head(20), holdout=prepared.holdout)


def test_register_logs_the_evidence_into_its_run(model, prepared, fitted, mlflow_target, client, monkeypatch):
    first = _register(model, prepared, fitted, mlflow_target, "manual__evidence-1")
    listed = {a.path for a in client.list_artifacts(first.run_id, "evidence")}
    assert EXPECTED_ARTIFACTS <= listed
    run = client.get_run(first.run_id)
    assert run.data.tags[evidence.CHAMPION_TAG] == "none: no version of churn has the alias champion"
    truth = evidence.model_evidence(model, fitted, prepared.holdout).metrics
    for name in ("precision", "recall", "f1", "accuracy", "log_loss", "average_precision"):
        assert run.data.metrics[f"holdout_{name}"] == pytest.approx(truth[name])
    assert len(client.get_metric_history(first.run_id, "holdout_roc_auc")) == 1  # evaluate's, not logged twice
    confusion = client.download_artifacts(first.run_id, "evidence/confusion_matrix.json")
    with open(confusion) as f:
        assert json.load(f)["candidate"]["tp"] == evidence.model_evidence(model, fitted, prepared.holdout).confusion.tp

    # with a champion in the registry, the next candidate's run compares against it on the same holdout rows
    client.set_registered_model_alias("churn", "champion", first.version)
    second = _register(model, prepared, fitted, mlflow_target, "manual__evidence-2")
    run = client.get_run(second.run_id)
    assert run.data.tags[evidence.CHAMPION_TAG] == f"version {first.version}"
    assert run.data.metrics["champion_holdout_roc_auc"] == pytest.approx(run.data.metrics["holdout_roc_auc"])

    # a champion that cannot be loaded leaves the candidate's evidence, and the tag says why
    def refuse(*args, **kwargs):
        raise RuntimeError("artifact store unreachable")

    monkeypatch.setattr(evidence, "load_champion", refuse)
    third = _register(model, prepared, fitted, mlflow_target, "manual__evidence-3")
    run = client.get_run(third.run_id)
    assert run.data.tags[evidence.CHAMPION_TAG] == (
        "skipped: the champion could not be loaded (RuntimeError: artifact store unreachable)")
    assert "champion_holdout_roc_auc" not in run.data.metrics
    assert EXPECTED_ARTIFACTS <= {a.path for a in client.list_artifacts(third.run_id, "evidence")}
