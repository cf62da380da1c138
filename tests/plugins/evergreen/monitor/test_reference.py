"""Reference statistics: what is kept per feature, the sketch's error bound, the bounded deterministic sample, and
storage in the lake (a drift run on the loaded reference gives the same result as on the built one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evergreen import lake
from evergreen.config import FeatureSpec, LabelSpec, ModelConfig
from evergreen.monitor.drift import compute_drift
from evergreen.monitor.reference import (
    SOURCE_LAKE_WINDOW,
    SOURCE_TRAINING_ROWS,
    build_reference,
    load_reference,
    save_reference,
    save_training_reference,
    sorted_values,
)

FEATURES = (
    FeatureSpec("amount", "float", nullable=True),
    FeatureSpec("age", "int"),
    FeatureSpec("rating", "int"),
    FeatureSpec("plan", "category", categories=("basic", "standard", "premium")),
    FeatureSpec("autopay", "bool"),
)
MODEL = ModelConfig(name="ref", entity_id="entity", label=LabelSpec("y"), features=FEATURES)


def training(n: int = 20_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3, 0.7, n)
    amount[rng.random(n) < 0.05] = np.nan
    amount[:2] = [np.inf, -np.inf]
    return pd.DataFrame({
        "amount": amount,
        "age": rng.integers(18, 90, n),
        "rating": rng.integers(1, 6, n),
        "plan": rng.choice(np.array(["basic", "standard", "premium"], dtype=object), n, p=[0.5, 0.3, 0.2]),
        "autopay": rng.random(n) < 0.6,
        "other": rng.random(n),  # not a feature: not kept
    })


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return training()


def test_kinds_counts_and_exact_summaries(train):
    ref = build_reference(train, MODEL, version=3)
    f = ref.features

    assert ref.model == "ref" and ref.version == "3" and ref.n_rows == len(train)
    assert {name: s.kind for name, s in f.items()} == {
        "amount": "num", "age": "num", "rating": "cat", "plan": "cat", "autopay": "cat"}
    finite = train["amount"][np.isfinite(train["amount"])]
    assert f["amount"].n == len(finite) and f["amount"].n_null == len(train) - len(finite)
    assert f["amount"].mean == pytest.approx(finite.mean(), rel=1e-12)
    assert f["amount"].std == pytest.approx(np.std(finite.to_numpy()), rel=1e-12)
    assert (f["amount"].min, f["amount"].max) == (finite.min(), finite.max())
    # integer features and categories are kept exactly: distinct values with their counts
    assert f["age"].exact and f["age"].counts() == {float(k): v for k, v in train["age"].value_counts().items()}
    assert f["rating"].counts() == train["rating"].value_counts().to_dict()
    assert f["plan"].counts() == train["plan"].value_counts().to_dict()
    assert f["autopay"].counts() == {True: int(train["autopay"].sum()), False: int((~train["autopay"]).sum())}
    assert "other" not in f and list(ref.sample.columns) == [s.name for s in FEATURES]


def test_continuous_feature_is_sketched_within_its_stored_bound(train):
    ref = build_reference(train, MODEL, exact_values=1000, sketch_size=500)
    amount = ref.features["amount"]
    full = train["amount"][np.isfinite(train["amount"])].to_numpy()

    assert not amount.exact and len(amount.values) == 500 and amount.weights.sum() == len(full)
    assert np.all(np.diff(amount.values) >= 0)
    # the stored error is the normed Wasserstein distance between the full reference and the sketch ...
    true_error = stats.wasserstein_distance(full, amount.values, None, amount.weights) / np.std(full)
    assert amount.sketch_error == pytest.approx(true_error, rel=1e-6)
    # ... and bounds the CDF error too
    grid = np.sort(full)
    cumulative = np.concatenate(([0], np.cumsum(amount.weights)))
    sketch_cdf = cumulative[np.searchsorted(amount.values, grid, side="right")] / len(full)
    full_cdf = np.searchsorted(grid, grid, side="right") / len(full)
    assert np.max(np.abs(sketch_cdf - full_cdf)) <= amount.cdf_error
    # the mean survives sketching exactly
    assert np.average(amount.values, weights=amount.weights) == pytest.approx(full.mean(), rel=1e-12)
    # at the default size the sketch is fine-grained enough to be far below the 0.1 Wasserstein threshold
    default = build_reference(training(200_000, seed=1), MODEL).features["amount"]
    assert not default.exact and len(default.values) <= 65_536 and default.sketch_error < 1e-3


def test_sample_is_bounded_deterministic_and_made_of_training_rows(train):
    a = build_reference(train, MODEL, sample_size=300)
    b = build_reference(train, MODEL, sample_size=300)
    other_seed = build_reference(train, MODEL, sample_size=300, seed=1)

    assert len(a.sample) == 300 and a.sample_size == 300
    pd.testing.assert_frame_equal(a.sample, b.sample)
    assert not a.sample.equals(other_seed.sample)
    rows = train.reset_index(drop=True)[a.sample.columns]
    assert a.sample.astype(str).apply(tuple, axis=1).isin(set(rows.astype(str).apply(tuple, axis=1))).all()
    small = build_reference(train.head(50), MODEL, sample_size=300)
    assert len(small.sample) == 50


def test_problems_are_kept_on_the_feature_not_raised(train):
    bad = train.drop(columns=["rating"]).assign(age="unknown", plan=np.nan)
    ref = build_reference(bad, MODEL)

    assert ref.features["rating"].problem == "feature missing from the training data"
    assert "expected numbers" in ref.features["age"].problem and "'unknown'" in ref.features["age"].problem
    assert ref.features["plan"].problem == "no non-null values in the training data"
    assert ref.features["amount"].problem is None


def test_save_and_load_round_trip_under_the_reference_dir(tmp_path, train):
    uri = lake.reference_dir("ref", 7, root=str(tmp_path))
    ref = build_reference(train, MODEL, version=7, exact_values=1000, sketch_size=500)
    save_reference(ref, uri)
    files = {p.name: p.read_bytes() for p in (tmp_path / "ref" / "reference" / "version=7").iterdir()}
    loaded = load_reference(uri)

    assert set(files) == {"stats.json", "numeric.parquet", "sample.parquet"}
    assert (loaded.model, loaded.version, loaded.n_rows) == ("ref", "7", len(train))
    for name, original in ref.features.items():
        again = loaded.features[name]
        assert (again.kind, again.n, again.n_null, again.exact, again.std, again.sketch_error) == (
            original.kind, original.n, original.n_null, original.exact, original.std, original.sketch_error)
        assert again.values.tolist() == original.values.tolist() and again.weights.tolist() == original.weights.tolist()
    pd.testing.assert_frame_equal(loaded.sample, ref.sample)

    current = training(3000, seed=5)
    current["amount"] *= 1.3
    assert compute_drift(loaded, current, MODEL).to_dict() == compute_drift(ref, current, MODEL).to_dict()

    save_reference(ref, uri)  # idempotent: same reference, same bytes
    assert {p.name: p.read_bytes() for p in (tmp_path / "ref" / "reference" / "version=7").iterdir()} == files


def test_loading_a_missing_reference_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no reference statistics at .*version=9.*build_reference"):
        load_reference(lake.reference_dir("ref", 9, root=str(tmp_path)))


def test_the_training_rows_reference_is_stored_with_its_fingerprint_and_source(tmp_path, train):
    uri = lake.reference_dir("ref", 8, root=str(tmp_path))
    built = save_training_reference(train, MODEL, version=8, data_fingerprint="ab" * 32, uri=uri)
    loaded = load_reference(uri)
    assert (built.source, built.data_fingerprint) == (SOURCE_TRAINING_ROWS, "ab" * 32)
    assert (loaded.source, loaded.data_fingerprint, loaded.version, loaded.n_rows) == (
        SOURCE_TRAINING_ROWS, "ab" * 32, "8", len(train))
    assert loaded.summary()["data_fingerprint"] == "ab" * 32
    with pytest.raises(ValueError, match="fingerprint is required"):
        save_training_reference(train, MODEL, version=8, data_fingerprint="", uri=uri)


def test_a_reference_written_before_fingerprints_loads_as_a_lake_window_rebuild(tmp_path, train):
    import json

    uri = lake.reference_dir("ref", 3, root=str(tmp_path))
    save_reference(build_reference(train.head(500), MODEL, version=3), uri)
    stats_file = tmp_path / "ref" / "reference" / "version=3" / "stats.json"
    doc = json.loads(stats_file.read_text())
    for key in ("data_fingerprint", "source"):
        doc.pop(key)
    stats_file.write_text(json.dumps(doc))
    loaded = load_reference(uri)
    assert (loaded.source, loaded.data_fingerprint) == (SOURCE_LAKE_WINDOW, None)


def test_category_values_have_one_order_whatever_their_types():
    assert sorted_values({"b", "a", "c"}) == ["a", "b", "c"]
    assert sorted_values({10, 2, 1}) == [1, 2, 10]  # natural order, not text order
    assert sorted_values([True, False]) == [False, True]
    assert sorted_values(["x", 1, None]) == sorted_values([None, 1, "x"])  # a mix: by type, then text
