"""The evidence people look at on a candidate's training run: the confusion matrix at the model's decision rule,
ROC and precision-recall curves of the candidate and the champion on the same holdout rows, feature importance,
and the scalar metrics a training script logs.

The computations are pure (config, fitted pipeline, holdout frame in; dataclasses out) and reuse evaluate's rule
for the positive class and the predicted class (:func:`evergreen.train.evaluate._positive_scores`), so a number
here and the gate's number cannot disagree. :func:`log_evidence` writes them into an MLflow run under
``evidence/``: four PNG figures, their tables as JSON, and ``holdout_<metric>`` / ``champion_holdout_<metric>``
metrics. The champion is optional evidence: when it cannot be loaded or cannot score the holdout, the candidate is
logged alone and the run tag ``evergreen.evidence.champion`` says why.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evergreen.config import ModelConfig
from evergreen.tracking import CHAMPION, TAG, alias_version
from evergreen.train.evaluate import _positive_scores, metric_value
from evergreen.train.spec import LABEL

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from evergreen.train.register import MlflowTarget

log = logging.getLogger(__name__)

EVIDENCE_DIR = "evidence"
CHAMPION_TAG = f"{TAG}evidence.champion"
CANDIDATE_ROLE, CHAMPION_ROLE = "candidate", "champion"
# A curve has up to one point per distinct score; the table and figure keep at most this many (areas use all).
MAX_CURVE_POINTS = 1000
# Permutation importance re-scores the sample n_features x repeats times: bound the sample.
PERMUTATION_ROWS = 2000
PERMUTATION_REPEATS = 5
_NOTE_CHARS = 500


@dataclass(frozen=True)
class ConfusionMatrix:
    """Rows are the actual class, columns the predicted one, negative first: ``[[tn, fp], [fn, tp]]``."""

    labels: tuple[str, str]  # (negative, positive) as shown
    matrix: tuple[tuple[int, int], tuple[int, int]]

    @property
    def tn(self) -> int:
        return self.matrix[0][0]

    @property
    def fp(self) -> int:
        return self.matrix[0][1]

    @property
    def fn(self) -> int:
        return self.matrix[1][0]

    @property
    def tp(self) -> int:
        return self.matrix[1][1]


@dataclass(frozen=True)
class ModelEvidence:
    role: str  # candidate | champion
    confusion: ConfusionMatrix
    roc: list[tuple[float, float, float | None]]  # (fpr, tpr, threshold); threshold None where scikit-learn has inf
    pr: list[tuple[float, float, float | None]]  # (recall, precision, threshold); the last point has none
    metrics: dict[str, float]


@dataclass(frozen=True)
class FeatureImportance:
    method: str  # feature_importances_ | coef_ | permutation
    values: dict[str, float]  # config feature name -> importance, in config order
    std: dict[str, float] = field(default_factory=dict)  # permutation only: std over the repeats
    rows: int = 0  # rows the permutation scored (0 for the estimator's own importances)
    scoring: str = ""  # permutation only: the config metric it scored


@dataclass(frozen=True)
class Evidence:
    rows: int
    positive_class: int
    decision: str  # how the predicted class is chosen
    threshold: float | None  # the positive-class probability threshold that rule amounts to, when there is one
    candidate: ModelEvidence
    importance: FeatureImportance
    champion: ModelEvidence | None = None
    champion_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- computations -------------------------------------------------------------------------------------------------


def decision_rule(pipeline: Pipeline) -> tuple[str, float | None]:
    """How evaluate turns scores into a predicted class, and the threshold that is for two classes."""
    if hasattr(pipeline, "predict_proba"):
        two = len(getattr(pipeline, "classes_", ())) == 2
        return "argmax of predict_proba", (0.5 if two else None)
    return "predict (no predict_proba: the scores are the hard predictions)", None


def _thin(*columns: np.ndarray) -> list[np.ndarray]:
    import numpy as np

    n = len(columns[0])
    if n <= MAX_CURVE_POINTS:
        return list(columns)
    keep = np.unique(np.linspace(0, n - 1, MAX_CURVE_POINTS).round().astype("int64"))  # first and last stay
    return [c[keep] for c in columns]


def _threshold(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def model_evidence(model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame, role: str = CANDIDATE_ROLE
                   ) -> ModelEvidence:
    """Confusion matrix, ROC and PR curve points and scalar metrics of one fitted pipeline on the holdout."""
    import numpy as np
    from sklearn import metrics

    positive = model.label.positive_class
    y = holdout[LABEL].to_numpy()
    score, pred = _positive_scores(model, pipeline, holdout[model.feature_names])
    yb = (y == positive).astype("int64")
    pb = (pred == positive).astype("int64")
    negatives = model.label.negative_classes
    negative_label = str(negatives[0]) if len(negatives) == 1 else f"not {positive}"
    cm = metrics.confusion_matrix(yb, pb, labels=[0, 1])
    confusion = ConfusionMatrix(
        (negative_label, str(positive)), ((int(cm[0, 0]), int(cm[0, 1])), (int(cm[1, 0]), int(cm[1, 1])))
    )
    values: dict[str, float] = {
        "accuracy": metric_value("accuracy", y, score, pred, positive),
        "precision": float(metrics.precision_score(yb, pb, zero_division=0.0)),
        "recall": float(metrics.recall_score(yb, pb, zero_division=0.0)),
        "f1": metric_value("f1", y, score, pred, positive),
    }
    roc: list[tuple[float, float, float | None]] = []
    pr: list[tuple[float, float, float | None]] = []
    if 0 < yb.sum() < len(yb):  # both classes present: curves and areas are defined
        values["roc_auc"] = metric_value("roc_auc", y, score, pred, positive)
        values["average_precision"] = float(metrics.average_precision_score(yb, score))
        fpr, tpr, thr = _thin(*metrics.roc_curve(yb, score))
        roc = [(float(a), float(b), _threshold(t)) for a, b, t in zip(fpr, tpr, thr, strict=True)]
        precision, recall, pthr = metrics.precision_recall_curve(yb, score)
        precision, recall, pthr = _thin(precision, recall, np.append(pthr, np.inf))
        pr = [(float(r), float(p), _threshold(t)) for r, p, t in zip(recall, precision, pthr, strict=True)]
    if hasattr(pipeline, "predict_proba"):  # a hard 0/1 "probability" would make log loss meaningless
        values["log_loss"] = metric_value("log_loss", y, score, pred, positive)
    return ModelEvidence(role, confusion, roc, pr, values)


def _encoded_owners(model: ModelConfig, pipeline: Pipeline) -> list[str] | None:
    """The config feature behind each column the estimator sees, or None when the pipeline is not the one
    :func:`evergreen.train.spec.build_pipeline` builds (one ColumnTransformer step named ``features``)."""
    from sklearn.compose import ColumnTransformer

    features = dict(pipeline.steps).get("features")
    if not isinstance(features, ColumnTransformer):
        return None
    width = len(features.get_feature_names_out())
    owners: list[str | None] = [None] * width
    for name, transformer, columns in features.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        part = features.output_indices_[name]
        columns = list(columns)
        if len(columns) == 1:  # a one-hot encoder of one feature: all its columns are that feature
            names = columns * (part.stop - part.start)
        else:  # the numeric block passes its (kept) input names through
            names = [str(n) for n in transformer.get_feature_names_out(columns)]
        if len(names) != part.stop - part.start:
            return None
        owners[part] = names
    known = set(model.feature_names)
    if any(o is None or o not in known for o in owners):
        return None
    return owners  # type: ignore[return-value]


def _own_importances(model: ModelConfig, pipeline: Pipeline) -> FeatureImportance | None:
    import numpy as np

    estimator = pipeline.steps[-1][1]
    method, raw = "feature_importances_", getattr(estimator, "feature_importances_", None)
    if raw is None:
        coef = getattr(estimator, "coef_", None)  # on standardized numerics, so magnitudes compare
        if coef is None:
            return None
        method, raw = "coef_", np.abs(np.atleast_2d(np.asarray(coef, dtype="float64"))).sum(axis=0)
    raw = np.asarray(raw, dtype="float64").ravel()
    owners = _encoded_owners(model, pipeline)
    if owners is None or len(owners) != len(raw):
        return None
    totals = dict.fromkeys(model.feature_names, 0.0)
    for owner, value in zip(owners, raw, strict=True):
        totals[owner] += abs(float(value))  # a one-hot feature's importance is the sum over its columns
    return FeatureImportance(method, totals)


def permutation_importances(model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame) -> FeatureImportance:
    """Permutation importance of the config's raw features on a seeded sample of at most
    :data:`PERMUTATION_ROWS` holdout rows, scored with the config metric (larger is more important)."""
    import numpy as np
    from sklearn.inspection import permutation_importance

    positive = model.label.positive_class
    frame = holdout
    if len(frame) > PERMUTATION_ROWS:
        rng = np.random.default_rng(model.training.seed)
        frame = frame.iloc[np.sort(rng.choice(len(frame), PERMUTATION_ROWS, replace=False))]
    X, y = frame[model.feature_names], frame[LABEL].to_numpy()
    sign = -1.0 if model.metric == "log_loss" else 1.0  # permutation_importance wants greater-is-better

    def scorer(estimator: Any, X_: pd.DataFrame, y_: np.ndarray) -> float:
        score, pred = _positive_scores(model, estimator, X_)
        return sign * metric_value(model.metric, y_, score, pred, positive)

    result = permutation_importance(
        pipeline, X, y, scoring=scorer, n_repeats=PERMUTATION_REPEATS, random_state=model.training.seed
    )
    names = model.feature_names
    return FeatureImportance(
        "permutation",
        {n: float(v) for n, v in zip(names, result.importances_mean, strict=True)},
        {n: float(v) for n, v in zip(names, result.importances_std, strict=True)},
        rows=len(X),
        scoring=model.metric,
    )


def feature_importance(model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame) -> FeatureImportance:
    """The estimator's own importances (``feature_importances_``, else ``|coef_|``) mapped back to the config's
    feature names through the feature step; permutation importance where the estimator has neither."""
    return _own_importances(model, pipeline) or permutation_importances(model, pipeline, holdout)


def compute_evidence(
    model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame, champion: Pipeline | None = None,
    champion_note: str = "",
) -> Evidence:
    """All the evidence of a candidate, with the champion's on the same rows when given (its errors propagate:
    :func:`collect_evidence` is the forgiving entry point)."""
    decision, threshold = decision_rule(pipeline)
    return Evidence(
        rows=len(holdout),
        positive_class=model.label.positive_class,
        decision=decision,
        threshold=threshold,
        candidate=model_evidence(model, pipeline, holdout, CANDIDATE_ROLE),
        importance=feature_importance(model, pipeline, holdout),
        champion=None if champion is None else model_evidence(model, champion, holdout, CHAMPION_ROLE),
        champion_note=champion_note,
    )


# --- the champion -------------------------------------------------------------------------------------------------


def load_champion(client: MlflowClient, model: str, target: MlflowTarget) -> tuple[Pipeline | None, str]:
    """The pipeline behind ``models:/<model>@champion`` (skops, platform trust list) and a note saying which
    version it is; ``(None, reason)`` when no version has the alias."""
    from evergreen.train.modelio import load_model

    version = alias_version(client, model, CHAMPION)
    if version is None:
        return None, f"none: no version of {model} has the alias {CHAMPION}"
    # Load the version the alias pointed at when read, not the alias again: the note then names what was compared.
    return load_model(f"models:/{model}/{version.version}", target), f"version {version.version}"


def _why(what: str, exc: Exception) -> str:
    return f"skipped: {what} ({type(exc).__name__}: {exc})"[:_NOTE_CHARS]


def collect_evidence(
    model: ModelConfig, pipeline: Pipeline, holdout: pd.DataFrame, *, champion: Pipeline | None = None,
    client: MlflowClient | None = None, target: MlflowTarget | None = None,
) -> Evidence:
    """:func:`compute_evidence` with the champion made optional: the caller's ``champion``, else the registry's
    (when ``client`` and ``target`` are given). A champion that cannot be loaded or cannot score these holdout
    rows (another feature schema, say) leaves the candidate's evidence alone, with the reason in ``champion_note``.
    The candidate's own evidence is not optional: its errors propagate."""
    note = "given by the caller" if champion is not None else "not looked up"
    if champion is None and client is not None and target is not None:
        try:
            champion, note = load_champion(client, model.name, target)
        except Exception as exc:  # optional evidence: any failure to load it must not block the candidate
            log.warning("%s: champion not compared: %s", model.name, exc)
            champion, note = None, _why("the champion could not be loaded", exc)
    champion_evidence = None
    if champion is not None:
        try:
            champion_evidence = model_evidence(model, champion, holdout, CHAMPION_ROLE)
        except Exception as exc:  # same: e.g. a champion trained on another feature schema
            log.warning("%s: champion (%s) could not score the holdout: %s", model.name, note, exc)
            note = _why(f"the champion ({note}) could not score the holdout", exc)
    evidence = compute_evidence(model, pipeline, holdout, None, note)
    return dataclasses.replace(evidence, champion=champion_evidence)


# --- figures and logging ------------------------------------------------------------------------------------------


def _models(evidence: Evidence) -> list[ModelEvidence]:
    return [evidence.candidate] + ([evidence.champion] if evidence.champion is not None else [])


def confusion_figure(evidence: Evidence) -> Figure:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, no figure registry to leak

    models = _models(evidence)
    fig = Figure(figsize=(4.2 * len(models), 3.8), layout="constrained")
    for i, m in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        ax.imshow(m.confusion.matrix, cmap="Blues")
        top = max(max(row) for row in m.confusion.matrix)
        for r in range(2):
            for c in range(2):
                count = m.confusion.matrix[r][c]
                ax.text(c, r, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
        ax.set_xticks([0, 1], labels=list(m.confusion.labels))
        ax.set_yticks([0, 1], labels=list(m.confusion.labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(m.role)
    rule = f"threshold {evidence.threshold:g}" if evidence.threshold is not None else evidence.decision
    fig.suptitle(f"holdout, {evidence.rows} rows, positive class {evidence.positive_class}, {rule}")
    return fig


def roc_figure(evidence: Evidence) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for m in _models(evidence):
        if m.roc:
            ax.plot([p[0] for p in m.roc], [p[1] for p in m.roc],
                    label=f"{m.role} (AUC {m.metrics.get('roc_auc', float('nan')):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, holdout ({evidence.rows} rows)")
    ax.legend(loc="lower right")
    return fig


def pr_figure(evidence: Evidence) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for m in _models(evidence):
        if m.pr:
            ax.plot([p[0] for p in m.pr], [p[1] for p in m.pr],
                    label=f"{m.role} (AP {m.metrics.get('average_precision', float('nan')):.3f})")
    c = evidence.candidate.confusion
    total = c.tp + c.fn + c.tn + c.fp
    if total:
        ax.axhline((c.tp + c.fn) / total, linestyle="--", color="grey", linewidth=0.8)  # a random model's precision
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall, holdout ({evidence.rows} rows)")
    ax.legend(loc="upper right")
    return fig


def importance_figure(evidence: Evidence) -> Figure:
    from matplotlib.figure import Figure

    imp = evidence.importance
    names = sorted(imp.values, key=lambda n: (imp.values[n], n))  # largest on top
    fig = Figure(figsize=(6, 1.2 + 0.35 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [imp.values[n] for n in names], xerr=[imp.std[n] for n in names] if imp.std else None)
    detail = f"permutation, {imp.scoring}, {imp.rows} rows" if imp.method == "permutation" else imp.method
    ax.set_title(f"feature importance ({detail})")
    return fig


def _curve_table(evidence: Evidence, which: str, columns: tuple[str, str]) -> dict[str, list[Any]]:
    table: dict[str, list[Any]] = {"model": [], columns[0]: [], columns[1]: [], "threshold": []}
    for m in _models(evidence):
        for a, b, t in getattr(m, which):
            table["model"].append(m.role)
            table[columns[0]].append(a)
            table[columns[1]].append(b)
            table["threshold"].append(t)
    return table


def evidence_metrics(evidence: Evidence) -> dict[str, float]:
    """``holdout_<name>`` of the candidate and ``champion_holdout_<name>`` of the champion, finite values only."""
    out = {f"holdout_{k}": v for k, v in sorted(evidence.candidate.metrics.items())}
    if evidence.champion is not None:
        out.update({f"champion_holdout_{k}": v for k, v in sorted(evidence.champion.metrics.items())})
    return {k: v for k, v in out.items() if math.isfinite(v)}


def log_evidence(client: MlflowClient, run_id: str, evidence: Evidence, *, skip_metrics: Collection[str] = ()
                 ) -> list[str]:
    """Log the evidence into run ``run_id``: figures and tables under ``evidence/``, the metrics (except
    ``skip_metrics``, already logged by the caller) and the champion tag. Returns the artifact paths written."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, 0) for k, v in evidence_metrics(evidence).items() if k not in skip_metrics]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, CHAMPION_TAG, evidence.champion_note or "none")
    written: list[str] = []

    def path(name: str) -> str:
        written.append(f"{EVIDENCE_DIR}/{name}")
        return written[-1]

    confusion = {
        "positive_class": evidence.positive_class, "decision": evidence.decision, "threshold": evidence.threshold,
        "rows": evidence.rows, "layout": "rows: actual, columns: predicted, negative first",
        **{m.role: {"labels": list(m.confusion.labels), "matrix": [list(r) for r in m.confusion.matrix],
                    "tn": m.confusion.tn, "fp": m.confusion.fp, "fn": m.confusion.fn, "tp": m.confusion.tp}
           for m in _models(evidence)},
    }
    client.log_dict(run_id, confusion, path("confusion_matrix.json"))
    client.log_table(run_id, _curve_table(evidence, "roc", ("fpr", "tpr")), path("roc_curve.json"))
    client.log_table(run_id, _curve_table(evidence, "pr", ("recall", "precision")), path("pr_curve.json"))
    imp = evidence.importance
    client.log_table(run_id, {
        "feature": list(imp.values), "importance": list(imp.values.values()),
        "std": [imp.std.get(n) for n in imp.values], "method": [imp.method] * len(imp.values),
    }, path("feature_importance.json"))
    client.log_dict(run_id, {**evidence.to_dict(), "metrics": evidence_metrics(evidence)}, path("evidence.json"))
    for name, build in (("confusion_matrix.png", confusion_figure), ("roc_curve.png", roc_figure),
                        ("pr_curve.png", pr_figure), ("feature_importance.png", importance_figure)):
        client.log_figure(run_id, build(evidence), path(name))
    return written
