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
