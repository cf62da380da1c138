"""One model call over many requests (validation by the ingestion contract, per-request outcomes) and the
micro-batching scorer (bounded batches, a retired scorer drains what was queued), with a stand-in model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from evergreen.config import get_config
from evergreen.serve.models import InvalidRows, LoadedModel, ModelFailure, Scored, Scorer, score_rows, warmup_row
from serving_support import rows

MODEL = get_config().model("churn")


class Stub:
    """Scores tenure / 600; raises on support_calls == 199; records each call's row count."""

    classes_ = np.array([0, 1])

    def __init__(self):
        self.calls: list[int] = []

    def predict_proba(self, X):
        self.calls.append(len(X))
        if (X["support_calls"] == 199).any():
            raise ValueError("boom")
        p = X["tenure_months"].to_numpy(dtype=float) / 600
        return np.column_stack([1 - p, p])


def row(**changes):
    rec = {**rows(1)[0], **changes}
    return [rec[f] for f in MODEL.feature_names]


def test_the_warmup_row_passes_the_contract():
    (outcome,) = score_rows(LoadedModel(MODEL, "1", Stub()), [[warmup_row(MODEL)]])
    assert isinstance(outcome, Scored)


def test_one_call_scores_the_valid_requests_and_names_the_bad_rows_of_the_others():
    stub = Stub()
    jobs = [[row(tenure_months=60)], [row(), row(plan="gold"), row(tenure_months=-3)], [row(tenure_months=300)] * 2]
    a, b, c = score_rows(LoadedModel(MODEL, "1", stub), jobs)
    assert stub.calls == [3]  # one model call: the valid requests' rows only
    assert isinstance(a, Scored) and a.scores == pytest.approx([0.1]) and a.predictions == [0]
    assert isinstance(b, InvalidRows) and [i for i, _ in b.problems] == [1, 2]
    assert "'gold' is not one of the categories" in b.problems[0][1]
    assert isinstance(c, Scored) and c.scores == pytest.approx([0.5, 0.5])
    assert a.features[0]["tenure_months"] == 60 and isinstance(a.features[0]["tenure_months"], int)


def test_a_model_error_fails_the_valid_requests_of_the_call_only():
    bad, invalid = score_rows(LoadedModel(MODEL, "1", Stub()), [[row(support_calls=199)], [row(region="mars")]])
    assert isinstance(bad, ModelFailure) and "ValueError: boom" in str(bad)
    assert isinstance(invalid, InvalidRows)


def test_the_scorer_batches_within_its_bound_and_drains_when_retired():
    stub = Stub()
    batches = []

    async def main():
        scorer = Scorer(LoadedModel(MODEL, "1", stub), "champion", max_batch_rows=8, max_wait_s=0.05,
                        on_batch=lambda s, n, secs, outcomes: batches.append(n))
        futures = [scorer.submit([row()]) for _ in range(20)] + [scorer.submit([row()] * 12)]
        scorer.retire()
        outcomes = await asyncio.gather(*futures)
        await scorer.wait_closed()
        late = await scorer.submit([row()])  # after the scorer stopped: still answered by its version
        return outcomes, late

    outcomes, late = asyncio.run(main())
    assert all(isinstance(o, Scored) for o in outcomes) and isinstance(late, Scored)
    assert sum(batches) == 20 + 12 + 1
    assert batches[:3] == [8, 8, 4]  # 20 single rows in batches of at most 8, then the 12-row request alone
    assert batches[3] == 12


# --- the plain path: the contract's rule without pandas, and the exact scores of a real version -----------------

EDGE_VALUES = [
    None, True, False, 0, 1, -1, 5, 12, 199, 200, 201, 600, 601, -0.0, 0.0, 0.5, 12.0, 12.5, 599.9999999, 600.0000001,
    9999.0, 10000.0, 10000.5, 1e16, 1e300, float("nan"), float("inf"), float("-inf"), 2**53, 2**53 + 1, 10**30,
    "12", "12.5", "", " basic", "basic", "Basic", "standard", "premium", "gold", "north", "west", "true", "yes", "1",
    [1], {"a": 1},
]


def _same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True)) and bool((np.signbit(a) == np.signbit(b)).all())
    return [type(v) for v in a.tolist()] == [type(v) for v in b.tolist()] and a.tolist() == b.tolist()


@pytest.mark.parametrize("spec", MODEL.features, ids=MODEL.feature_names)
def test_a_value_the_plain_path_accepts_is_one_the_contract_accepts_parsed_the_same(spec):
    from evergreen.serve.models import _contract_columns, plain_columns

    base = warmup_row(MODEL)
    j = MODEL.feature_names.index(spec.name)
    accepted = 0
    for value in EDGE_VALUES:
        for batch in ([value], [value, base[j]], [base[j], value, value]):
            rows_ = [[*base[:j], v, *base[j + 1:]] for v in batch]
            plain = plain_columns(MODEL, rows_)
            if plain is None:
                continue
            accepted += 1
            outcomes, parsed = _contract_columns(MODEL, [rows_], rows_)
            assert outcomes == [None], f"{spec.name}={value!r}: the plain path accepts what the contract refuses"
            for name in MODEL.feature_names:
                assert _same(plain[name], parsed[name]), f"{spec.name}={value!r}: {name} parsed differently"
    assert accepted  # every feature has plainly valid values


def test_the_plain_path_takes_what_clients_send_and_leaves_the_rest_to_the_contract():
    from evergreen.serve.models import plain_columns

    assert plain_columns(MODEL, [row(), row(total_charges=None), row(monthly_charges=50)]) is not None
    for odd in (row(tenure_months="12"), row(autopay="yes"), row(tenure_months=-3), row(plan="gold"),
                row(tenure_months=True), row(support_calls=2.5), row(total_charges=float("inf"))):
        assert plain_columns(MODEL, [row(), odd]) is None
    assert plain_columns(MODEL, [row()[:-1]]) is None  # a short row: the contract's frame says so
    assert plain_columns(MODEL, []) is None


def test_score_rows_answers_the_versions_own_scores_exactly(registry):
    """Both paths (plain batches, and a batch the contract parses) answer pipeline.predict_proba's numbers."""
    from serving_support import expected_scores

    recs = rows(200, seed="exact")
    for version, pipeline in registry.pipelines.items():
        loaded = LoadedModel(MODEL, version, pipeline)
        assert loaded.predictor.compiled
        expected = expected_scores(pipeline, recs)
        values = [[r[f] for f in MODEL.feature_names] for r in recs]
        for size in (1, 8, 64):
            got = []
            for at in range(0, len(values), size):
                got += [s for o in score_rows(loaded, [[v] for v in values[at:at + size]]) for s in o.scores]
            assert got == expected, f"version {version}, batches of {size}"
        # "12" is a valid int by the contract's parse: the batch takes the contract's path, with the same scores
        texts = [[str(v[0]), *v[1:]] for v in values[:10]]
        outcomes = score_rows(loaded, [texts[:4], [row(plan="gold")], texts[4:]])
        assert isinstance(outcomes[1], InvalidRows)
        assert outcomes[0].scores + outcomes[2].scores == expected[:10]
        assert outcomes[0].features == score_rows(loaded, [values[:4]])[0].features  # logged alike: 12, not "12"
