"""The typed ab_test: policy: the churn block loads, and an invalid block fails naming the field and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from evergreen.config import ConfigError, get_config, load_config
from evergreen.experiment.policy import SHADOW_SUFFIX, shadow_request_id


def test_the_churn_block_loads():
    policy = get_config().model("churn").ab_test
    assert (policy.mode, policy.challenger_share, policy.metric, policy.better) == ("split", 0.5, "outcome_rate",
                                                                                  "lower")
    assert policy.sequential_tuning == 15000 and policy.srm_p_value == 0.001


def write(tmp_path, ab_test: dict):
    from evergreen.paths import config_dir

    doc = yaml.safe_load((config_dir() / "churn.yaml").read_text())
    doc["models"]["churn"]["ab_test"] = ab_test
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


@pytest.mark.parametrize("block, message", [
    ({"metric": "outcome_rate"}, "ab_test.better: required when metric is outcome_rate"),
    ({"alpha": 1.5}, "ab_test.alpha: 1.5 is not allowed"),
    ({"min_detectable_effect": 0}, "ab_test.min_detectable_effect"),
    ({"sequential_tuning": 0}, "ab_test.sequential_tuning"),
    ({"bootstrap_draws": 100}, "ab_test.bootstrap_draws"),
    ({"schedule": "every day"}, "ab_test.schedule"),
    ({"metric": "revenue"}, "ab_test.metric: 'revenue' is not allowed; expected one of model_metric, outcome_rate"),
    ({"challenger_share": 1}, "ab_test.challenger_share"),
])
def test_an_invalid_block_names_the_field(tmp_path, block, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(write(tmp_path, block))


def test_the_shadow_request_id_contract():
    assert shadow_request_id("churn-1") == "churn-1" + SHADOW_SUFFIX == "churn-1~shadow"
