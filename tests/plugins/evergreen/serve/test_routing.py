"""A/B assignment: a deterministic hash of the routing key and the experiment id, at the challenger's share."""

from __future__ import annotations

import pytest

from evergreen.experiment.policy import shadow_request_id
from evergreen.serve import routing


def test_the_same_entity_gets_the_same_arm_every_time():
    keys = [f"customer-{i}" for i in range(2000)]
    first = routing.assign_all(keys, "churn:7", 0.5)
    assert routing.assign_all(keys, "churn:7", 0.5) == first
    assert [routing.assign(k, "churn:7", 0.5) for k in reversed(keys)] == first[::-1]


@pytest.mark.parametrize("share", [0.05, 0.3, 0.5, 0.9])
def test_the_challengers_share_of_entities_is_the_policys(share):
    n = 20_000
    arms = routing.assign_all([f"e{i}" for i in range(n)], "churn:3", share)
    observed = arms.count(routing.CHALLENGER) / n
    assert abs(observed - share) < 4 * (share * (1 - share) / n) ** 0.5  # four standard errors


def test_a_larger_share_only_moves_entities_towards_the_challenger():
    keys = [f"e{i}" for i in range(5000)]
    small = routing.assign_all(keys, "churn:3", 0.2)
    large = routing.assign_all(keys, "churn:3", 0.5)
    assert all(b == routing.CHALLENGER for a, b in zip(small, large) if a == routing.CHALLENGER)


def test_a_new_experiment_redraws_the_entities():
    keys = [f"e{i}" for i in range(10_000)]
    a = routing.assign_all(keys, routing.experiment_id("churn", "3"), 0.5)
    b = routing.assign_all(keys, routing.experiment_id("churn", "4"), 0.5)
    both = sum(x == y == routing.CHALLENGER for x, y in zip(a, b)) / len(keys)
    assert abs(both - 0.25) < 0.02  # independent draws, not the same half again


def test_ids_cannot_collide_across_the_separator():
    assert routing.bucket("bc", "a") != routing.bucket("c", "ab")
    assert routing.experiment_id("churn", "12") == "churn:12"


def test_buckets_are_uniform_fractions():
    values = [routing.bucket(str(i), "x") for i in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert routing.bucket("42", "x") == routing.bucket("42", "x")


def test_shadow_rows_use_the_ab_analysis_request_id_rule():
    assert routing.shadow_request_id("r1") == shadow_request_id("r1") == "r1~shadow"
    assert routing.SHADOW == "shadow" and routing.ARMS == ("champion", "challenger")
