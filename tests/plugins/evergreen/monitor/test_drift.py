"""The drift engine: parity with Evidently's DataDriftPreset (a real Report run on the same data), pinning, and bad
input that must give an explained "cannot judge" instead of a crash or a false verdict."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from evergreen.config import DriftPolicy, FeatureSpec, LabelSpec, ModelConfig
from evergreen.monitor.drift import DriftResult, compute_drift, dataset_verdict, FeatureDrift
from evergreen.monitor.reference import build_reference

# Evidently's display names -> the registry names we record
EVIDENTLY_METHODS = {
    "K-S p_value": "ks", "chi-square p_value": "chisquare", "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon", "PSI": "psi",
}

FEATURES = (
    FeatureSpec("num", "float"),
    FeatureSpec("num_nulls", "float", nullable=True),
    FeatureSpec("num_low", "float"),  # a float column with 4 distinct values: numeric, but few values
    FeatureSpec("int_low", "int"),  # <= 10 distinct integers: Evidently infers categorical
    FeatureSpec("int_high", "int"),  # 100 distinct integers: numeric
    FeatureSpec("cat", "category", categories=("a", "b", "c", "d")),
    FeatureSpec("flag", "bool"),
    FeatureSpec("const_num", "float"),
    FeatureSpec("const_cat", "category", categories=("same", "other")),
)


def make_model(features=FEATURES, **policy) -> ModelConfig:
    return ModelConfig(name="m", entity_id="entity", label=LabelSpec("y"), features=tuple(features),
                       drift=DriftPolicy(**policy))


def frame(n: int, seed: int, drift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = 1.0 if drift else 0.0
    const_num = np.full(n, 2.0)
    if drift:
        const_num[rng.random(n) < 0.1] = 2.5  # a constant column that gains a second value
    return pd.DataFrame({
        "num": rng.normal(0.5 * k, 1.0, n),
        "num_nulls": np.where(rng.random(n) < 0.15, np.nan, rng.exponential(1.0 + 0.6 * k, n)),
        "num_low": rng.choice([0.0, 1.5, 3.0, 4.5], n, p=[0.4, 0.3, 0.2, 0.1] if not drift else [0.2, 0.2, 0.3, 0.3]),
        "int_low": rng.choice(np.arange(7), n, p=np.linspace(1, 1 + 2 * k, 7) / np.linspace(1, 1 + 2 * k, 7).sum()),
        "int_high": rng.integers(0, 100, n) + int(12 * k),
        "cat": rng.choice(np.array(["a", "b", "c", "d"], dtype=object), n,
                          p=[0.4, 0.3, 0.2, 0.1] if not drift else [0.25, 0.25, 0.25, 0.25]),
        "flag": rng.random(n) < 0.5 + 0.15 * k,
        "const_num": const_num,
        "const_cat": np.full(n, "same", dtype=object),
    })


def evidently_drift(reference: pd.DataFrame, current: pd.DataFrame, **preset) -> dict:
    """Per-column method, threshold, score and verdict, and the dataset share, from a real Evidently Report."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset(**preset)], include_tests=True).run(current, reference)
        definition = Dataset.from_pandas(current).data_definition
    doc = snapshot.dict()
    columns: dict[str, dict] = {}
    share = None
    for metric in doc["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            method = config["method"]
            columns[config["column"]] = {"method": EVIDENTLY_METHODS.get(method, method),
                                         "threshold": config["threshold"], "score": float(metric["value"])}
        elif config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
    for test in doc["tests"]:
        prefix = "Value Drift for column "
        if test["name"].startswith(prefix):
            columns[test["name"][len(prefix):]]["drifted"] = test["status"] == "FAIL"
    for name in columns:
        columns[name]["kind"] = "cat" if name in definition.get_categorical_columns() else "num"
    return {"columns": columns, "share": share, "dataset_drift": share >= preset.get("drift_share", 0.5)}


def assert_parity(ours: DriftResult, theirs: dict, score_tolerance: dict[str, float] | None = None) -> None:
    assert ours.status == "ok"
    assert {f.feature for f in ours.features} == set(theirs["columns"])
    for f in ours.features:
        ev = theirs["columns"][f.feature]
        where = f"feature {f.feature}: ours {f.method} {f.score} {f.drifted} vs Evidently {ev}"
        assert f.status == "ok", where
        assert f.kind == ev["kind"], where
        assert f.method == ev["method"], where
        assert f.threshold == pytest.approx(ev["threshold"]), where
        assert f.drifted == ev["drifted"], where
        tol = (score_tolerance or {}).get(f.feature)
        if tol is None:
            assert f.score == pytest.approx(ev["score"], rel=1e-9, abs=1e-12), where
        else:
            assert abs(f.score - ev["score"]) <= tol + 1e-12, where
    assert ours.drifted_share == pytest.approx(theirs["share"])
    assert ours.dataset_drift == theirs["dataset_drift"]


# --- parity with Evidently -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_reference", "n_current", "drift", "expected_methods"),
    [
        # <= 1000 reference rows: K-S for numeric, chi-square (3+ values) or Z (2 values) for the rest
        (600, 500, False, {"num": "ks", "num_low": "chisquare", "int_low": "chisquare", "flag": "z", "const_num": "z",
                           "const_cat": "z", "cat": "chisquare"}),
        (600, 500, True, {"num": "ks", "num_low": "chisquare", "flag": "z", "const_num": "z"}),
        # > 1000 reference rows: normed Wasserstein for numeric, Jensen-Shannon for categorical and few-valued numeric
        (3000, 2000, False, {"num": "wasserstein", "num_nulls": "wasserstein", "int_high": "wasserstein",
                             "num_low": "jensenshannon", "int_low": "jensenshannon", "const_num": "jensenshannon",
                             "flag": "jensenshannon"}),
        (3000, 2000, True, {"num": "wasserstein", "num_low": "jensenshannon", "const_num": "jensenshannon"}),
    ],
    ids=["small-ref-no-drift", "small-ref-drift", "large-ref-no-drift", "large-ref-drift"],
)
def test_verdicts_match_evidently_data_drift_preset(n_reference, n_current, drift, expected_methods):
    model = make_model()
    reference_df, current_df = frame(n_reference, seed=1), frame(n_current, seed=2, drift=drift)
    ours = compute_drift(build_reference(reference_df, model), current_df, model)
    theirs = evidently_drift(reference_df, current_df)

    assert_parity(ours, theirs)
    for name, method in expected_methods.items():
        assert ours.feature(name).method == method
    # the scenarios exercise both verdicts
    assert ours.dataset_drift is drift
    assert ours.feature("const_cat").drifted is False
    assert ours.feature("num").drifted is drift


def test_pinned_methods_and_thresholds_match_evidently():
    # per-feature pins win over the model-wide method; thresholds: per feature > model-wide > method default
    model = make_model(method="jensenshannon", feature_methods={"num": "ks", "cat": "psi", "int_high": "wasserstein"},
                       feature_thresholds={"num": 0.01, "int_high": 0.2})
    reference_df, current_df = frame(3000, seed=3), frame(2000, seed=4, drift=True)
    ours = compute_drift(build_reference(reference_df, model), current_df, model)
    theirs = evidently_drift(reference_df, current_df, method="jensenshannon",
                             per_column_method={"num": "ks", "cat": "psi", "int_high": "wasserstein"},
                             per_column_threshold={"num": 0.01, "int_high": 0.2})

    assert_parity(ours, theirs)
    assert (ours.feature("num").method, ours.feature("num").threshold) == ("ks", 0.01)
    assert (ours.feature("int_high").method, ours.feature("int_high").threshold) == ("wasserstein", 0.2)
    assert ours.feature("num_nulls").method == "jensenshannon"  # numeric, > 20 values: Sturges histogram
    assert all(f.pinned for f in ours.features)


def test_model_wide_method_applies_to_the_kinds_it_supports():
    # Evidently's num_method: K-S on numeric features, defaults (Jensen-Shannon here) on categorical ones
    model = make_model(method="ks")
    reference_df, current_df = frame(3000, seed=5), frame(2000, seed=6, drift=True)
    ours = compute_drift(build_reference(reference_df, model), current_df, model)
    theirs = evidently_drift(reference_df, current_df, num_method="ks")

    assert_parity(ours, theirs)
    assert ours.feature("num").method == "ks" and ours.feature("num").pinned
    assert ours.feature("cat").method == "jensenshannon" and not ours.feature("cat").pinned


def test_sketched_reference_agrees_with_evidently_on_the_full_reference():
    # A reference with more distinct values than `exact_values` keeps a quantile sketch; the Wasserstein score
    # against it is within the stored bound of Evidently's score on the full reference.
    features = (FeatureSpec("num", "float"), FeatureSpec("num_nulls", "float", nullable=True),
                FeatureSpec("int_high", "int"), FeatureSpec("cat", "category", categories=("a", "b", "c", "d")))
    model = make_model(features)
    reference_df = frame(20_000, seed=7)[[f.name for f in features]]
    reference = build_reference(reference_df, model, exact_values=50, sketch_size=2000)
    assert not reference.features["num"].exact and reference.features["int_high"].exact
    for drift, seed in ((False, 8), (True, 9)):
        current_df = frame(4000, seed=seed, drift=drift)[[f.name for f in features]]
        ours = compute_drift(reference, current_df, model)
        theirs = evidently_drift(reference_df, current_df)
        bounds = {f.feature: f.score_error for f in ours.features if not f.exact}
        assert set(bounds) == {"num", "num_nulls"} and all(0 < b < 0.01 for b in bounds.values())
        assert_parity(ours, theirs, score_tolerance=bounds)
        assert ours.feature("num").drifted is drift


# --- recorded form ---------------------------------------------------------------------------------------


def test_result_records_method_threshold_and_rule_as_plain_json():
    model = make_model()
    result = compute_drift(build_reference(frame(600, seed=1), model), frame(500, seed=2, drift=True), model)
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))

    assert doc["status"] == "ok" and doc["dataset_drift"] is True
    assert doc["n_features"] == len(FEATURES) and doc["n_judged"] == len(FEATURES)
    assert doc["drift_share_threshold"] == 0.5
    by_name = {f["feature"]: f for f in doc["features"]}
    assert by_name["num"]["method"] == "ks" and by_name["num"]["drift_if"] == "p_value <= 0.05"
    assert by_name["cat"]["drift_if"] == "p_value < 0.05"
    assert sorted(doc["drifted_features"]) == sorted(f.feature for f in result.features if f.drifted)
    large = compute_drift(build_reference(frame(3000, seed=1), model), frame(500, seed=2), model).to_dict()
    assert {f["feature"]: f["drift_if"] for f in large["features"]}["num"] == "distance >= 0.1"


# --- bad input: explained "cannot judge", never a crash, never a false verdict -----------------------------


@pytest.fixture(scope="module")
def small_model():
    return make_model((FeatureSpec("num", "float"), FeatureSpec("num2", "float"), FeatureSpec("num3", "float"),
                       FeatureSpec("cat", "category", categories=("a", "b", "c", "d")), FeatureSpec("flag", "bool")))


@pytest.fixture(scope="module")
def small_reference(small_model):
    rng = np.random.default_rng(11)
    train = frame(3000, seed=10)[["num", "cat", "flag"]]
    train = train.assign(num2=rng.normal(0, 1, 3000), num3=rng.normal(0, 1, 3000))
    return build_reference(train, small_model)


def window(n: int, seed: int = 12, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = frame(n, seed=seed)[["num", "cat", "flag"]]
    return base.assign(num=base["num"] + shift, num2=rng.normal(shift, 1, n), num3=rng.normal(shift, 1, n))


@pytest.mark.parametrize("current", [pd.DataFrame(), None, window(500).iloc[:0]], ids=["no-columns", "none", "no-rows"])
def test_empty_window_cannot_be_judged(small_model, small_reference, current):
    result = compute_drift(small_reference, current, small_model)

    assert result.status == "cannot_judge" and result.dataset_drift is None and result.drifted_share is None
    assert "empty" in result.reason
    assert all(f.status == "cannot_judge" and f.drifted is None and f.score is None for f in result.features)
    # the method that would have run is still recorded, so the record says what was not done
    assert result.feature("num").method == "wasserstein" and result.feature("num").threshold == 0.1


def test_too_few_rows_cannot_be_judged(small_model, small_reference):
    min_rows = small_model.drift.min_rows
    result = compute_drift(small_reference, window(min_rows - 1, shift=3.0), small_model)

    assert result.status == "cannot_judge" and result.dataset_drift is None
    assert f"{min_rows - 1} rows" in result.reason and f"min_rows ({min_rows})" in result.reason
    assert not any(f.drifted for f in result.features)


def test_missing_wrong_type_and_all_null_features_are_explained(small_model, small_reference):
    current = window(500).drop(columns=["num2"])
    current["num3"] = "n/a"  # strings in a numeric feature
    current["flag"] = np.nan  # all null
    current["cat"] = np.arange(500) % 4  # numbers where category labels belong
    result = compute_drift(small_reference, current, small_model)

    reasons = {f.feature: f.reason for f in result.features if f.status == "cannot_judge"}
    assert set(reasons) == {"num2", "num3", "flag", "cat"}
    assert "missing from the current window" in reasons["num2"]
    assert "wrong type" in reasons["num3"] and "'n/a'" in reasons["num3"] and "expected numbers" in reasons["num3"]
    assert "all 500 values of 'flag'" in reasons["flag"] and "null" in reasons["flag"]
    assert "wrong type" in reasons["cat"] and "expected category labels" in reasons["cat"]
    assert result.feature("flag").n_null_current == 500
    # one judged feature out of five, not drifted: 0-4 of 5 could drift -> no verdict either way
    assert result.feature("num").status == "ok" and result.feature("num").drifted is False
    assert result.status == "cannot_judge" and result.dataset_drift is None
    assert "4 of 5 features could not be judged" in result.reason


def test_unjudged_features_allow_a_verdict_only_when_it_cannot_change(small_model, small_reference):
    drifted = window(500, shift=1.0)
    # 3 of 5 judged features drifted: >= 0.5 of all features whatever the other two show -> drift
    sure_drift = compute_drift(small_reference, drifted.drop(columns=["cat", "flag"]), small_model)
    assert sure_drift.status == "ok" and sure_drift.dataset_drift is True
    assert sure_drift.n_drifted == 3 and sure_drift.drifted_share == 1.0
    assert "holds whatever they would show" in sure_drift.reason

    # nothing drifted and only 2 unjudged: at most 2 of 5 < 0.5 -> no drift, for sure
    sure_calm = compute_drift(small_reference, window(500).drop(columns=["num2", "num3"]), small_model)
    assert sure_calm.status == "ok" and sure_calm.dataset_drift is False

    # 2 of 5 drifted, 1 unjudged: 0.4 .. 0.6 straddles 0.5 -> cannot judge (Evidently, blind to the missing
    # column, would have said "no drift" on the four it sees)
    mixed = window(500).assign(num=drifted["num"], num2=drifted["num2"]).drop(columns=["num3"])
    undecided = compute_drift(small_reference, mixed, small_model)
    assert undecided.n_drifted == 2 and undecided.status == "cannot_judge" and undecided.dataset_drift is None
    assert "between 0.40 and 0.60" in undecided.reason


def test_dataset_verdict_with_every_feature_judged_is_evidentlys_share_rule():
    def feats(*drifted):
        return tuple(FeatureDrift(str(i), "num", "ks", 0.05, 0.5, d, "ok", None, 100, 100)
                     for i, d in enumerate(drifted))

    assert dataset_verdict(feats(True, False), 0.5)[:3] == ("ok", True, 0.5)  # share >= drift_share
    assert dataset_verdict(feats(True, False, False), 0.5)[:3] == ("ok", False, pytest.approx(1 / 3))
    assert dataset_verdict((), 0.5)[0] == "cannot_judge"


def test_sparse_feature_below_min_rows_cannot_be_judged(small_model, small_reference):
    current = window(500)
    current.loc[current.index[40:], "num"] = np.nan  # 40 values left, policy min_values = 50
    current.loc[current.index[:3], "num2"] = np.inf  # infinities are dropped like nulls (as Evidently does)
    result = compute_drift(small_reference, current, small_model)

    assert result.feature("num").status == "cannot_judge"
    assert "only 40 non-null values of 'num'" in result.feature("num").reason
    assert "min_values 50" in result.feature("num").reason
    assert result.feature("num2").status == "ok" and result.feature("num2").n_current == 497


def test_features_without_usable_reference_cannot_be_judged(small_model):
    train = window(3000, seed=13).assign(num2=np.nan)  # all-null in training
    reference = build_reference(train.drop(columns=["num3"]), small_model)  # num3 missing from training
    reference.features.pop("flag")  # a feature added to the config after the reference was built
    result = compute_drift(reference, window(500), small_model)

    reasons = {f.feature: f.reason for f in result.features if f.status == "cannot_judge"}
    assert set(reasons) == {"num2", "num3", "flag"}
    assert "no non-null values in the training data" in reasons["num2"]
    assert "missing from the training data" in reasons["num3"]
    assert "no reference statistics for 'flag'" in reasons["flag"] and "rebuild" in reasons["flag"]


def test_pinned_method_that_does_not_fit_the_feature_is_explained():
    model = make_model((FeatureSpec("num", "float"), FeatureSpec("cat", "category", categories=("a", "b", "c", "d"))),
                       feature_methods={"cat": "wasserstein"})
    result = compute_drift(build_reference(frame(2000, seed=1), model), frame(500, seed=2), model)

    cat = result.feature("cat")
    assert cat.status == "cannot_judge" and cat.method == "wasserstein"
    assert "does not apply to a categorical feature" in cat.reason and "jensenshannon" in cat.reason
    assert result.feature("num").status == "ok"


def test_store_encodings_of_bool_and_integer_features_are_judged_as_the_values_they_stand_for():
    # SQLite/JSON give booleans back as 0/1 and integer columns with nulls as floats
    model = make_model((FeatureSpec("flag", "bool"), FeatureSpec("int_low", "int", nullable=True)))
    reference = build_reference(frame(3000, seed=1), model)
    native = frame(800, seed=2, drift=True)[["flag", "int_low"]]
    stored = native.assign(flag=native["flag"].astype("int64"), int_low=native["int_low"].astype("float64"))
    stored.loc[stored.index[:30], "int_low"] = np.nan
    a, b = compute_drift(reference, native, model), compute_drift(reference, stored, model)

    assert a.feature("flag").score == b.feature("flag").score
    assert b.feature("int_low").status == "ok" and b.feature("int_low").kind == "cat"
    assert b.feature("int_low").n_current == 770 and b.feature("int_low").drifted == a.feature("int_low").drifted


# --- determinism across processes -------------------------------------------------------------------------------

_SCORES_SCRIPT = """
import json
import numpy as np
import pandas as pd
from evergreen.config import DriftPolicy, FeatureSpec, LabelSpec, ModelConfig
from evergreen.monitor.drift import compute_drift
from evergreen.monitor.reference import build_reference, load_reference, save_reference

cats = tuple(f"segment-{i:02d}" for i in range(23))
pins = {"c_chi": "chisquare", "c_js": "jensenshannon", "c_psi": "psi", "c_z": "z"}
features = [FeatureSpec(name, "category", categories=cats) for name in pins] + [
    FeatureSpec("c_default", "category", categories=cats), FeatureSpec("codes", "int")]
model = ModelConfig(name="m", entity_id="e", label=LabelSpec("y"), features=tuple(features),
                    drift=DriftPolicy(feature_methods=pins))

def window(n, seed, tilt):
    rng = np.random.default_rng(seed)
    p = np.linspace(1.0, 1.0 + tilt, len(cats))
    frame = {name: rng.choice(np.array(cats, dtype=object), n, p=p / p.sum()) for name in [*pins, "c_default"]}
    frame["c_z"] = rng.choice(np.array(cats[:2], dtype=object), n, p=[0.55 + tilt / 100, 0.45 - tilt / 100])
    frame["codes"] = rng.integers(0, 9, n)
    return pd.DataFrame(frame)

ref = build_reference(window(20000, 1, 0.5), model)
save_reference(ref, "{uri}")
ref = load_reference("{uri}")
result = compute_drift(ref, window(3000, 2, 0.8), model)
print(json.dumps({f.feature: [f.method, float(f.score).hex()] for f in result.features}))
"""


def test_scores_are_bit_identical_whatever_the_hash_seed(tmp_path):
    """Set iteration order follows PYTHONHASHSEED; a sum over categories in that order differs in its last bits
    between processes, which would bump the MLflow monitoring run on an identical re-run."""
    import os
    import subprocess
    import sys

    outputs = {}
    for seed in ("0", "1", "2", "3"):
        script = _SCORES_SCRIPT.replace("{uri}", str(tmp_path / f"ref-{seed}"))
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[seed] = json.loads(done.stdout.strip().splitlines()[-1])
    methods = {name: method for name, (method, _) in outputs["0"].items()}
    assert {methods[n] for n in ("c_chi", "c_js", "c_psi", "c_z")} == {"chisquare", "jensenshannon", "psi", "z"}
    assert all(out == outputs["0"] for out in outputs.values()), outputs
    # the stored reference is byte-identical too
    stats = {seed: (tmp_path / f"ref-{seed}" / "stats.json").read_bytes() for seed in outputs}
    assert len(set(stats.values())) == 1
