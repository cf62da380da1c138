"""Reference statistics of a model version: computed once from its training data, stored in the lake.

A drift run compares the current window with these statistics instead of re-reading the training set. They are
built when the version is registered, from the exact rows it was trained on (:func:`save_training_reference`,
called by the training pipeline's register step), stored with that training data's fingerprint under
``lake.reference_dir(model, version)``, and the version is tagged with their URI (:data:`REFERENCE_URI_TAG`).
Monitoring checks the stored fingerprint against the version's :data:`DATA_FINGERPRINT_TAG` before it trusts them.
:func:`build_reference` keeps, per feature, what the drift methods of :mod:`evergreen.monitor.drift` need, plus one
bounded, deterministic sample of training rows (for the Evidently HTML report, which wants rows).

What is stored per feature, and why
-----------------------------------
* **Counts** -- non-null (finite) values ``n`` and nulls ``n_null``. Like Evidently, nulls and +-inf are dropped
  before any method runs and the reference size that picks the default method is the non-null count.
* **Kind** -- ``num`` or ``cat``, fixed here once per version so the method, and so the score, stays comparable
  from run to run. ``float`` features are numeric; ``category`` and ``bool`` features categorical; an ``int``
  feature is categorical when it has at most 10 distinct values (Evidently's ``INTEGER_CARDINALITY_LIMIT``:
  it infers an integer column with <= 10 distinct values as categorical), numeric otherwise.
* **Exact summaries** -- mean, population standard deviation (Evidently norms the Wasserstein distance by
  ``max(std(reference), 0.001)``), min and max, all from the full training data.
* **The distribution** as weighted points (``values``, ``weights``):

  - *exact* when the feature has at most ``exact_values`` distinct values (every categorical feature, integer
    features, rounded amounts, any reference of <= 1000 rows): the sorted distinct values with their counts.
    Every method is then computed on exactly the distribution Evidently sees -- K-S, chi-square and Z on
    small references, Wasserstein and Jensen-Shannon on large ones -- and scores match Evidently on the full
    reference up to floating-point summation order.
  - a *quantile sketch* otherwise (continuous features of large training sets): the sorted values cut into
    ``sketch_size`` consecutive blocks of (nearly) equal mass, each block replaced by its mean and weighted
    by its size. The overall mean is kept exactly. Because the coupling of sorted values to their block mean
    is monotone, it is the optimal transport plan, so the stored ``sketch_error`` -- the mean absolute
    distance from each training value to its block mean, divided by the same norm Evidently uses -- is
    *exactly* the normed Wasserstein distance between the full reference and the sketch. By the triangle
    inequality the normed Wasserstein score of any window against the sketch is within ``sketch_error`` of
    its score against the full reference, so the verdict can only differ when the score is that close to the
    threshold (0.1 by default; at the default sketch size ``sketch_error`` is 4e-5 to 1e-4 for normal,
    exponential and log-normal features of 1e5 to 1e6 rows). The CDF of the sketch is within ``cdf_error``
    (the largest block mass, 1/65536 to 1/50000 there) of the full reference's, which bounds the error of a
    pinned K-S statistic and of pinned histogram methods (Jensen-Shannon, PSI) the same way.

  The trade-off: storage and drift-run memory are bounded (at most ``max(exact_values, sketch_size)`` points
  per feature, ~1 MB, whatever the training set size) and a run needs one sort of the current window per
  numeric feature; the price is a documented, bounded approximation for continuous features of references
  larger than ``exact_values`` distinct values. Raise ``exact_values`` to make more features exact.

* ``problem`` -- why the feature cannot serve as a reference (missing from the training data, wrong type,
  no values), so a drift run reports it as "cannot judge" instead of failing.

Storage layout under ``lake.reference_dir(model, version)``::

    numeric.parquet   feature, value, weight   (weighted points of numeric features)
    sample.parquet    the bounded sample of training rows (feature columns)
    stats.json        everything else (with ``data_fingerprint`` and ``source``); written last, so a reader never
                      sees a half-written reference

``source`` says where the rows came from: ``training_rows`` (the register step: the rows the version trained on)
or ``lake_window`` (built later from the version's training window in the lake, the path kept for versions
registered before references were built at registration; it has no fingerprint to check).

This module imports nothing heavy at import time (pandas, numpy, pyarrow are imported inside functions).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from evergreen import lake
from evergreen.jsonable import jsonable
from evergreen.tracking import DATA_FINGERPRINT_TAG

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evergreen.config import FeatureSpec, ModelConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_SAMPLE_SIZE = 5000
#: distinct values up to which a numeric feature's distribution is stored exactly (values + counts)
EXACT_VALUES = 65_536
#: number of blocks of the quantile sketch of a numeric feature with more distinct values than that
SKETCH_SIZE = 65_536
#: Evidently infers an integer column with at most this many distinct values as categorical
INTEGER_CARDINALITY_LIMIT = 10
#: Evidently's floor of the standard deviation that norms the Wasserstein distance
STD_FLOOR = 0.001
STATS_FILE = "stats.json"
#: version tags: where the version's reference is, and the fingerprint of the data it was trained on (the latter is
#: written by :mod:`evergreen.train.register` with the version's other lineage tags)
REFERENCE_URI_TAG = "evergreen.reference_uri"
#: where a reference's rows came from
SOURCE_TRAINING_ROWS = "training_rows"
SOURCE_LAKE_WINDOW = "lake_window"
NUMERIC_FILE = "numeric.parquet"
SAMPLE_FILE = "sample.parquet"


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """What the drift methods need about one feature of the reference."""

    name: str
    type: str  # the config type: float | int | category | bool
    kind: str  # "num" | "cat"
    n: int  # non-null, finite values
    n_null: int
    # the distribution as weighted points, sorted by value for numeric features
    values: Any = None  # np.ndarray (float64 for num, object for cat)
    weights: Any = None  # np.ndarray int64, sums to n
    exact: bool = True
    mean: float | None = None
    std: float | None = None  # population std (ddof=0), as Evidently's np.std
    min: float | None = None
    max: float | None = None
    sketch_error: float = 0.0  # normed Wasserstein distance between full reference and stored points
    cdf_error: float = 0.0  # max |F_full - F_stored|
    problem: str | None = None

    @property
    def n_distinct(self) -> int | None:
        """Distinct values of the reference (None when only a sketch is kept: more than ``exact_values``)."""
        return int(len(self.values)) if self.exact and self.values is not None else None

    def counts(self) -> dict[Any, int]:
        """``{value: count}`` of an exact distribution (the value-count methods need it)."""
        return dict(zip(self.values.tolist(), self.weights.tolist()))

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name, "type": self.type, "kind": self.kind, "n": self.n, "n_null": self.n_null,
            "exact": self.exact, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
            "sketch_error": self.sketch_error, "cdf_error": self.cdf_error, "problem": self.problem,
        }
        if self.kind == "cat" and self.values is not None:
            doc["values"] = jsonable(self.values.tolist())
            doc["counts"] = [int(c) for c in self.weights.tolist()]
        return doc


@dataclass
class ReferenceStats:
    """Reference statistics of one model version (see the module docstring for what and why)."""

    model: str
    version: str | None
    n_rows: int
    features: dict[str, FeatureStats] = field(default_factory=dict)
    sample: Any = None  # pd.DataFrame: bounded deterministic sample of the training rows (feature columns)
    sample_seed: int = 0
    exact_values: int = EXACT_VALUES
    sketch_size: int = SKETCH_SIZE
    format_version: int = FORMAT_VERSION
    # fingerprint of the version's training data (evergreen.train.data.fingerprint), None for a lake_window rebuild
    data_fingerprint: str | None = None
    source: str = SOURCE_LAKE_WINDOW

    @property
    def sample_size(self) -> int:
        return 0 if self.sample is None else int(len(self.sample))

    def summary(self) -> dict[str, Any]:
        """A small JSON-friendly description (for platform records and MLflow params)."""
        return {
            "model": self.model, "version": self.version, "n_rows": self.n_rows, "sample_size": self.sample_size,
            "source": self.source, "data_fingerprint": self.data_fingerprint,
            "features": {
                name: {"kind": f.kind, "n": f.n, "n_null": f.n_null, "exact": f.exact,
                       "sketch_error": f.sketch_error, "problem": f.problem}
                for name, f in self.features.items()
            },
        }


def sorted_values(values: Iterable[Any]) -> list[Any]:
    """Category values in one deterministic order: their natural order (strings, numbers, booleans), or by type
    name and text when a mix cannot be compared.

    Every iteration over category values that reaches a number goes through this: the order of a set or of a
    dict built from one changes with ``PYTHONHASHSEED``, and a sum in another order differs in its last bits.
    """
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda v: (type(v).__name__, str(v)))


def _kind(spec: FeatureSpec, n_distinct: int) -> str:
    if spec.type == "float":
        return "num"
    if spec.type == "int":
        return "cat" if n_distinct <= INTEGER_CARDINALITY_LIMIT else "num"
    return "cat"


def _examples(values: Any) -> str:
    return ", ".join(repr(str(v)) for v in list(values)[:3])


def numeric_values(series: pd.Series) -> tuple[np.ndarray | None, str | None]:
    """The column as float64 (nulls as NaN), or ``(None, why)`` when it does not hold numbers.

    Strings and booleans are refused rather than coerced: a string in a numeric feature means the producer
    changed, and judging drift on half-parsed values would give a false verdict.
    """
    import numpy as np
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None, "holds booleans, expected numbers"
    if dtype == np.float64:
        return series.to_numpy(), None  # no copy: NaN already marks nulls
    if pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan), None
    if not (isinstance(dtype, np.dtype) and dtype.kind == "O") and not pd.api.types.is_string_dtype(dtype):
        return None, f"has dtype {dtype}, expected numbers"
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal", "empty"):
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan), None
    return None, f"holds {inferred} values (e.g. {_examples(series.dropna().unique())}), expected numbers"


def categorical_counts(series: pd.Series, spec_type: str) -> tuple[dict[Any, int] | None, str | None]:
    """``{value: count}`` of the non-null values of a categorical feature, or ``(None, why)`` for the wrong type.

    The type is checked on the distinct values only, so a million-row window costs one ``value_counts``.
    """
    import numpy as np
    import pandas as pd

    counts = series.value_counts(dropna=True, sort=False)
    if isinstance(counts.index.dtype, pd.CategoricalDtype):
        counts = counts[counts > 0]
        counts.index = counts.index.astype(object)
    keys = counts.index
    if len(keys) == 0:
        return {}, None
    inferred = pd.api.types.infer_dtype(keys, skipna=True)
    if spec_type == "int":
        if inferred not in ("integer", "floating"):
            return None, f"holds {inferred} values (e.g. {_examples(keys)}), expected integers"
        # integer categories logged through a float column (nulls present) are the ints they stand for
        as_float = np.asarray(keys, dtype="float64")
        if not np.all(np.isfinite(as_float)):
            counts = counts[np.isfinite(as_float)]
            as_float = as_float[np.isfinite(as_float)]
        if np.all(as_float == np.round(as_float)):
            return dict(zip(as_float.astype("int64").tolist(), counts.tolist())), None
        return dict(zip(as_float.tolist(), counts.tolist())), None
    if spec_type == "bool":
        if inferred == "boolean":
            return dict(zip([bool(k) for k in keys], counts.tolist())), None
        if inferred in ("integer", "floating") and set(np.asarray(keys, dtype="float64").tolist()) <= {0.0, 1.0}:
            # stores without a boolean type (SQLite, CSV) give 0/1
            out: dict[Any, int] = {}
            for k, c in zip(keys, counts.tolist()):
                out[bool(k)] = out.get(bool(k), 0) + c
            return out, None
        return None, f"holds {inferred} values (e.g. {_examples(keys)}), expected booleans"
    if inferred == "string":
        return dict(zip(keys.tolist(), counts.tolist())), None
    return None, f"holds {inferred} values (e.g. {_examples(keys)}), expected category labels (strings)"


def sorted_finite(values: np.ndarray) -> np.ndarray:
    """Sorted copy without NaN and +-inf (Evidently drops both before any method)."""
    import numpy as np

    s = np.sort(values)  # NaN sorts last, -inf first and +inf just before NaN
    lo = int(np.searchsorted(s, -np.inf, side="right"))
    hi = int(np.searchsorted(s, np.inf, side="left"))
    return s[lo:hi]


def _sketch(s: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means and sizes of ``size`` consecutive, nearly equal blocks of the sorted values ``s``."""
    import numpy as np

    bounds = np.linspace(0, len(s), size + 1).round().astype("int64")
    bounds = np.unique(bounds)
    sizes = np.diff(bounds)
    means = np.add.reduceat(s, bounds[:-1]) / sizes
    # float rounding can put a block mean a hair outside its block; keep the points sorted and in range
    means = np.clip(np.maximum.accumulate(means), s[0], s[-1])
    return means, sizes


def _numeric_stats(
    spec: FeatureSpec, raw: np.ndarray, n_total: int, exact_values: int, sketch_size: int
) -> FeatureStats:
    import numpy as np

    s = sorted_finite(raw)
    n = int(len(s))
    if n == 0:
        return FeatureStats(spec.name, spec.type, "num", 0, n_total, problem="no non-null values in the training data")
    change = np.flatnonzero(np.diff(s)) + 1
    n_distinct = int(len(change) + 1)
    kind = _kind(spec, n_distinct)
    std = float(np.std(s))
    mean = float(np.mean(s))
    common = dict(mean=mean, std=std, min=float(s[0]), max=float(s[-1]))
    # a sketch would not be smaller than the distinct values themselves: keep those, exactly
    if kind == "cat" or n_distinct <= max(exact_values, sketch_size):
        starts = np.concatenate(([0], change))
        values = s[starts]
        weights = np.diff(np.concatenate((starts, [n]))).astype("int64")
        if kind == "cat":
            # integer categories: keep them as ints, as Evidently's value counts of an int column do
            integral = bool(np.all(values == np.round(values)))
            values = (values.astype("int64") if integral else values).astype(object)
        return FeatureStats(spec.name, spec.type, kind, n, n_total - n, values, weights, True, **common)
    values, weights = _sketch(s, sketch_size)
    norm = max(std, STD_FLOOR)
    sketch_error = float(np.abs(s - np.repeat(values, weights)).mean() / norm)
    return FeatureStats(
        spec.name, spec.type, kind, n, n_total - n, values, weights.astype("int64"), False,
        sketch_error=sketch_error, cdf_error=float(weights.max() / n), **common,
    )


def _categorical_stats(spec: FeatureSpec, column: pd.Series, n_total: int) -> FeatureStats:
    import numpy as np

    counts, problem = categorical_counts(column, spec.type)
    if problem:
        return FeatureStats(spec.name, spec.type, "cat", 0, n_total, problem=f"training data {problem}")
    if not counts:
        return FeatureStats(spec.name, spec.type, "cat", 0, n_total, problem="no non-null values in the training data")
    keys = sorted_values(counts)  # a stable order, so the stored file is byte-identical on a re-run
    n = int(sum(counts.values()))
    return FeatureStats(spec.name, spec.type, "cat", n, n_total - n, np.array(keys, dtype=object),
                        np.array([counts[k] for k in keys], dtype="int64"), True)


def feature_stats(spec: FeatureSpec, column: pd.Series | None, n_total: int,
                  exact_values: int = EXACT_VALUES, sketch_size: int = SKETCH_SIZE) -> FeatureStats:
    """Reference statistics of one feature (``column`` None: the feature is missing from the training data)."""
    if column is None:
        return FeatureStats(spec.name, spec.type, "num" if spec.type == "float" else "cat", 0, n_total,
                            problem="feature missing from the training data")
    if spec.type in ("float", "int"):
        raw, problem = numeric_values(column)
        if problem:
            return FeatureStats(spec.name, spec.type, "num" if spec.type == "float" else "cat", 0, n_total,
                                problem=f"training data {problem}")
        return _numeric_stats(spec, raw, n_total, exact_values, sketch_size)
    return _categorical_stats(spec, column, n_total)


def build_reference(
    train: pd.DataFrame,
    model: ModelConfig,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    *,
    version: str | int | None = None,
    exact_values: int = EXACT_VALUES,
    sketch_size: int = SKETCH_SIZE,
    seed: int = 0,
    data_fingerprint: str | None = None,
    source: str = SOURCE_LAKE_WINDOW,
) -> ReferenceStats:
    """Reference statistics of ``model``'s features in ``train`` (its training data), once per model version.

    Deterministic: the same frame gives the same statistics and the same sample (rows drawn with ``seed``).
    Problems with a feature (missing, wrong type, no values) are kept on that feature, not raised, so the
    other features can still be monitored; they are logged.
    """
    import numpy as np

    if exact_values < 20 or sketch_size < 20:
        # the histogram methods switch on 20 distinct reference values; keep those exact
        raise ValueError("build_reference: exact_values and sketch_size must be at least 20")
    n_rows = int(len(train))
    features: dict[str, FeatureStats] = {}
    for spec in model.features:
        column = train[spec.name] if spec.name in train.columns else None
        stats = feature_stats(spec, column, n_rows, exact_values, sketch_size)
        if stats.problem:
            log.warning("reference %s v%s: feature '%s': %s", model.name, version, spec.name, stats.problem)
        features[spec.name] = stats
    present = [name for name in model.feature_names if name in train.columns]
    if n_rows > sample_size:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n_rows, size=sample_size, replace=False))
        sample = train[present].iloc[rows].reset_index(drop=True)
    else:
        sample = train[present].reset_index(drop=True)
    log.info("reference %s v%s: %d rows, %d features, sample of %d", model.name, version, n_rows,
             len(features), len(sample))
    return ReferenceStats(
        model=model.name, version=None if version is None else str(version), n_rows=n_rows, features=features,
        sample=sample, sample_seed=seed, exact_values=exact_values, sketch_size=sketch_size,
        data_fingerprint=data_fingerprint, source=source,
    )


def save_training_reference(
    train: pd.DataFrame, model: ModelConfig, *, version: str | int, data_fingerprint: str, uri: str
) -> ReferenceStats:
    """Build the reference of a just-registered version from ``train``, the exact rows it was trained on, and save
    it at ``uri`` with the fingerprint of its training data. A retry on the same rows writes the same files."""
    if not data_fingerprint:
        raise ValueError(f"reference of {model.name} version {version}: the training data fingerprint is required")
    ref = build_reference(train, model, model.drift.report_sample_size, version=version,
                          data_fingerprint=data_fingerprint, source=SOURCE_TRAINING_ROWS)
    save_reference(ref, uri)
    return ref


# --- storage --------------------------------------------------------------------------------------------


def save_reference(ref: ReferenceStats, uri: str) -> None:
    """Write ``ref`` under the folder ``uri`` (normally ``lake.reference_dir(model, version)``).

    Re-saving the same reference replaces the files with identical content (idempotent).
    """
    import numpy as np
    import pandas as pd

    numeric = [f for f in ref.features.values() if f.kind == "num" and f.values is not None]
    points = pd.DataFrame({
        "feature": np.repeat(np.array([f.name for f in numeric], dtype=object), [len(f.values) for f in numeric]),
        "value": np.concatenate([f.values for f in numeric]) if numeric else np.array([], dtype="float64"),
        "weight": np.concatenate([f.weights for f in numeric]) if numeric else np.array([], dtype="int64"),
    })
    lake.write_parquet_atomic(points, f"{uri.rstrip('/')}/{NUMERIC_FILE}")
    sample = ref.sample if ref.sample is not None else pd.DataFrame()
    lake.write_parquet_atomic(sample, f"{uri.rstrip('/')}/{SAMPLE_FILE}")
    doc = {
        "format_version": ref.format_version, "model": ref.model, "version": ref.version, "n_rows": ref.n_rows,
        "sample_seed": ref.sample_seed, "exact_values": ref.exact_values, "sketch_size": ref.sketch_size,
        "data_fingerprint": ref.data_fingerprint, "source": ref.source,
        "features": [jsonable(f.to_json()) for f in ref.features.values()],
    }
    lake.write_text_atomic(json.dumps(doc, indent=1), f"{uri.rstrip('/')}/{STATS_FILE}")
    log.info("saved reference %s v%s to %s", ref.model, ref.version, uri)


def load_reference(uri: str) -> ReferenceStats:
    """Read a reference written by :func:`save_reference`; a clear error if there is none at ``uri``."""
    import numpy as np

    base = uri.rstrip("/")
    stats_uri = f"{base}/{STATS_FILE}"
    if not lake.exists(stats_uri):
        raise FileNotFoundError(
            f"no reference statistics at {base} ({STATS_FILE} missing); build them for this model version with "
            "evergreen.monitor.reference.build_reference + save_reference (done when the version is trained)"
        )
    fs, path = lake.filesystem(stats_uri)
    with fs.open(path, "r") as fh:
        doc = json.load(fh)
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{stats_uri}: reference format {doc.get('format_version')} is not supported "
                         f"(expected {FORMAT_VERSION}); rebuild the reference for this version")
    points = lake.read_parquet(f"{base}/{NUMERIC_FILE}")
    groups = {name: g for name, g in points.groupby("feature", sort=False)} if len(points) else {}
    features: dict[str, FeatureStats] = {}
    for item in doc["features"]:
        values = weights = None
        if item["kind"] == "num" and item["name"] in groups:
            g = groups[item["name"]]
            values = g["value"].to_numpy(dtype="float64")
            weights = g["weight"].to_numpy(dtype="int64")
        elif item["kind"] == "cat" and "values" in item:
            values = np.array(item["values"], dtype=object)
            weights = np.array(item["counts"], dtype="int64")
        features[item["name"]] = FeatureStats(
            name=item["name"], type=item["type"], kind=item["kind"], n=item["n"], n_null=item["n_null"],
            values=values, weights=weights, exact=item["exact"], mean=item["mean"], std=item["std"],
            min=item["min"], max=item["max"], sketch_error=item["sketch_error"] or 0.0,
            cdf_error=item["cdf_error"] or 0.0, problem=item["problem"],
        )
    sample = lake.read_parquet(f"{base}/{SAMPLE_FILE}")
    return ReferenceStats(
        model=doc["model"], version=doc["version"], n_rows=doc["n_rows"], features=features, sample=sample,
        sample_seed=doc["sample_seed"], exact_values=doc["exact_values"], sketch_size=doc["sketch_size"],
        # references written before these keys existed were all built from the lake window at a drift run
        data_fingerprint=doc.get("data_fingerprint"), source=doc.get("source") or SOURCE_LAKE_WINDOW,
    )
