"""Typed configuration: the shipped files load; an invalid file fails naming the file, the field and what is allowed;
adding a model is adding a block, and every DAG file then generates one DAG per model."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evergreen.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "include" / "config"

# A minimal valid model block; cases below break one thing in it.
MINIMAL = """\
models:
  upsell:
    entity_id: account_id
    label: {name: bought}
    features:
      - {name: seats, type: int, min: 1, max: 5000}
      - {name: tier, type: category, categories: [free, pro]}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(folder: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(folder)
    return str(info.value)


def test_shipped_config_loads_into_typed_objects():
    config = load_config(SHIPPED)
    churn = config.model("churn")
    assert churn.source == str(SHIPPED / "churn.yaml")
    assert churn.entity_id == "customer_id" and churn.label.name == "churned"
    assert churn.feature_names[:2] == ["tenure_months", "monthly_charges"]
    plan = churn.feature("plan")
    assert plan.type == "category" and plan.categories == ("basic", "standard", "premium")
    tenure = churn.feature("tenure_months")
    assert (tenure.type, tenure.min, tenure.max) == ("int", 0.0, 600.0)
    assert churn.feature("total_charges").nullable is True
    # YAML ints become the declared float type; nested policy blocks are typed objects, not dicts.
    assert churn.retrain.cooldown_hours == 24.0 and isinstance(churn.retrain.cooldown_hours, float)
    assert churn.training.slices == ("plan", "region")
    assert churn.schedules.ingest_feedback == "0 1 * * *"


def test_the_positive_class_is_named_in_the_config_and_resolved_by_one_rule(tmp_path):
    from evergreen.config import LabelSpec

    churn = load_config(SHIPPED).model("churn")
    assert churn.label.positive == 1 and churn.label.positive_class == 1 and churn.label.negative_classes == (0,)
    # 0/1 classes without a name: 1 (the convention); other classes must name it
    assert LabelSpec("y").positive_class == 1
    assert LabelSpec("y", (1, 2), positive=1).positive_class == 1
    assert LabelSpec("y", (0, 1), positive=0).negative_classes == (1,)
    with pytest.raises(ConfigError, match=r"positive: required because classes \[1, 2\] are not 0/1"):
        LabelSpec("y", (1, 2)).positive_class
    with pytest.raises(ConfigError, match=r"positive: 5 is not one of the label's classes \[0, 1\]"):
        LabelSpec("y", positive=5).positive_class
    _write(tmp_path, "upsell.yaml", MINIMAL.replace("label: {name: bought}",
                                                    "label: {name: bought, classes: [1, 2], positive: 2}"))
    assert load_config(tmp_path).model("upsell").label.positive_class == 2


def test_get_config_reads_the_shipped_folder():
    from evergreen.config import get_config

    if os.environ.get("EVERGREEN_CONFIG_DIR"):
        pytest.skip("EVERGREEN_CONFIG_DIR points elsewhere in this session")
    assert "churn" in get_config().models


def test_unknown_model_lookup_lists_declared_models():
    with pytest.raises(ConfigError, match=r"model 'nope' is not declared; declared models: churn"):
        load_config(SHIPPED).model("nope")


def _feature_case(feature: str) -> str:
    return f"""\
models:
  upsell:
    entity_id: account_id
    label: {{name: bought}}
    features:
      - {feature}
"""


def _model_case(extra: str) -> str:
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "    ")


# (case id, file text, field path the message must name, what-is-allowed fragment)
INVALID = [
    (
        "unknown-field",
        _model_case("colour: red\n"),
        "models.upsell: unknown field 'colour'",
        "allowed fields: name, entity_id, label, features",
    ),
    (
        "wrong-type",
        _feature_case("{name: seats, type: int, min: low}"),
        "models.upsell.features[0].min: 'low' is not allowed",
        "expected float or null",
    ),
    (
        "bad-feature-type",
        _feature_case("{name: seats, type: string}"),
        "models.upsell.features[0].type: 'string' is not allowed",
        "expected one of float, int, category, bool",
    ),
    (
        "category-without-categories",
        _feature_case("{name: tier, type: category}"),
        "models.upsell.features[0].categories",
        "required for a 'category' feature",
    ),
    (
        "categories-on-a-number",
        _feature_case("{name: seats, type: int, categories: [a]}"),
        "models.upsell.features[0].categories",
        "only allowed for type 'category'",
    ),
    (
        "range-on-a-category",
        _feature_case("{name: tier, type: category, categories: [a], min: 0}"),
        "models.upsell.features[0]",
        "min/max only apply to 'float' and 'int' features",
    ),
    (
        "min-greater-than-max",
        _feature_case("{name: seats, type: int, min: 10, max: 1}"),
        "models.upsell.features[0]",
        "min (10.0) is greater than max (1.0)",
    ),
    (
        "duplicate-feature",
        MINIMAL + "      - {name: seats, type: float}\n",
        "models.upsell.features[2].name",
        "'seats' is declared twice",
    ),
    (
        "feature-clashes-with-entity-id",
        _feature_case("{name: account_id, type: int}"),
        "models.upsell.features[0].name",
        "clashes with an id, label or timestamp column",
    ),
    (
        "unknown-drift-feature",
        _model_case("drift: {feature_methods: {age: ks}}\n"),
        "models.upsell.drift.feature_methods",
        "unknown feature 'age'; features: seats, tier",
    ),
    (
        "bad-drift-method",
        _model_case("drift: {feature_methods: {seats: magic}}\n"),
        "models.upsell.drift.feature_methods.seats: 'magic' is not allowed",
        "expected one of ks, chisquare",
    ),
    (
        "unknown-slice-feature",
        _model_case("training: {slices: [country]}\n"),
        "models.upsell.training.slices",
        "unknown feature 'country'",
    ),
    (
        "bad-metric",
        _model_case("metric: mse\n"),
        "models.upsell.metric: 'mse' is not allowed",
        "expected one of roc_auc, accuracy, log_loss, f1",
    ),
    (
        "bad-cron",
        _model_case("schedules: {monitor_drift: every day}\n"),
        "models.upsell.schedules.monitor_drift: 'every day' is not a valid cron expression",
        "e.g. '0 1 * * *'",
    ),
    (
        "bad-date",
        _model_case("start_date: someday\n"),
        "models.upsell.start_date: 'someday' is not allowed",
        "expected a date (YYYY-MM-DD)",
    ),
    (
        "bool-for-a-number",
        _model_case("retrain: {min_new_rows: true}\n"),
        "models.upsell.retrain.min_new_rows: True is not allowed",
        "expected int",
    ),
    (
        "holdout-days-zero",
        _model_case("training: {holdout_days: 0}\n"),
        "models.upsell.training.holdout_days: 0 is not allowed",
        "a whole number of days >= 1",
    ),
    (
        "holdout-days-fill-the-window",
        _model_case("training: {holdout_days: 30}\n"),
        "models.upsell.training.holdout_days: 30 leaves no training day",
        "make it smaller than 30",
    ),
    (
        "holdout-fraction-is-gone",  # the request-id hash split was replaced by the out-of-time holdout
        _model_case("training: {holdout_fraction: 0.2}\n"),
        "models.upsell.training: unknown field 'holdout_fraction'",
        "holdout_days",
    ),
    (
        "missing-required-field",
        "models:\n  upsell:\n    label: {name: bought}\n    features:\n      - {name: seats, type: int}\n",
        "models.upsell.entity_id",
        "required field is missing",
    ),
    (
        "no-features",
        "models:\n  upsell:\n    entity_id: account_id\n    label: {name: bought}\n    features: []\n",
        "models.upsell.features",
        "at least one feature is required",
    ),
    (
        "bad-model-name",
        MINIMAL.replace("upsell:", "Up-Sell:"),
        "models.Up-Sell",
        "must match ^[a-z][a-z0-9_]{0,62}$",
    ),
    (
        "positive-not-a-class",
        MINIMAL.replace("label: {name: bought}", "label: {name: bought, classes: [0, 1], positive: 2}"),
        "models.upsell.label.positive: 2 is not one of the label's classes [0, 1]",
        "name one of them",
    ),
    (
        "positive-required-for-other-classes",
        MINIMAL.replace("label: {name: bought}", "label: {name: bought, classes: [1, 2]}"),
        "models.upsell.label.positive: required because classes [1, 2] are not 0/1",
        "name the class the metrics score as positive",
    ),
    (
        "class-listed-twice",
        MINIMAL.replace("label: {name: bought}", "label: {name: bought, classes: [0, 1, 1]}"),
        "models.upsell.label.classes: [0, 1, 1] lists a class twice",
        "twice",
    ),
    (
        "unknown-top-level-key",
        "model:\n  upsell: {}\n",
        "unknown top-level key 'model'",
        "allowed: models, platform",
    ),
    (
        "not-a-mapping",
        "- upsell\n",
        "expected a mapping",
        "'models' and/or 'platform'",
    ),
    (
        "unknown-platform-field",
        MINIMAL + "platform: {slack: '#ops'}\n",
        "platform: unknown field 'slack'",
        "allowed fields: alert_destinations, slack_conn_id",
    ),
]


@pytest.mark.parametrize(("text", "field_path", "allowed"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_file_names_file_field_and_what_is_allowed(tmp_path, text, field_path, allowed):
    path = _write(tmp_path, "upsell.yaml", text)
    message = _error(tmp_path)
    assert message.startswith(f"{path}: "), message
    assert field_path in message, message
    assert allowed in message, message


def test_invalid_yaml_names_the_file_and_the_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "models:\n  upsell: [\n    entity_id: x\n")
    message = _error(tmp_path)
    assert message.startswith(f"{path}: not valid YAML"), message
    assert "line" in message


def test_no_config_files_says_what_to_do(tmp_path):
    _write(tmp_path, "README.txt", "models go in *.yaml files")
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path}: no *.yaml config files"), message
    assert "declare at least one model" in message


def test_files_without_any_model_are_an_error(tmp_path):
    _write(tmp_path, "platform.yaml", "platform: {alert_destinations: [log]}\n")
    message = _error(tmp_path)
    assert message.startswith(f"{tmp_path}: no model declared in platform.yaml"), message
    assert "add a block under 'models:'" in message


def test_duplicate_model_across_files_names_both_files(tmp_path):
    first = _write(tmp_path, "a.yaml", MINIMAL)
    second = _write(tmp_path, "b.yaml", MINIMAL)
    message = _error(tmp_path)
    assert message == f"{second}: models.upsell: already declared in {first}"


def test_platform_block_declared_twice_names_both_files(tmp_path):
    first = _write(tmp_path, "a.yaml", MINIMAL + "platform: {alert_destinations: [log]}\n")
    second = _write(tmp_path, "b.yaml", "platform: {alert_destinations: [log]}\n")
    message = _error(tmp_path)
    assert message == f"{second}: platform: already declared in {first}; declare it once"


def test_a_second_model_block_is_a_second_model(tmp_path):
    _write(tmp_path, "churn.yaml", (SHIPPED / "churn.yaml").read_text())
    _write(tmp_path, "upsell.yaml", MINIMAL)
    config = load_config(tmp_path)
    assert sorted(config.models) == ["churn", "upsell"]
    upsell = config.model("upsell")
    assert upsell.source == str(tmp_path / "upsell.yaml")
    assert upsell.feature_names == ["seats", "tier"]
    # Defaults fill what the block leaves out; the other model is untouched.
    assert upsell.metric == "roc_auc" and upsell.schedules.ingest_feedback == "0 1 * * *"
    shipped = load_config(SHIPPED).model("churn")
    assert config.model("churn") == dataclasses.replace(shipped, source=str(tmp_path / "churn.yaml"))


def test_two_models_in_one_file(tmp_path):
    text = MINIMAL + textwrap.indent(
        "crosssell:\n  entity_id: account_id\n  label: {name: bought}\n  features:\n    - {name: seats, type: int}\n",
        "  ",
    )
    _write(tmp_path, "models.yaml", text)
    assert sorted(load_config(tmp_path).models) == ["crosssell", "upsell"]


# --- DAGs are generated per model -----------------------------------------------------------------------------

_DAGBAG_SCRIPT = """
import json, os, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(sys.argv[1])
folder = os.path.realpath(sys.argv[1])
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dags": {dag_id: os.path.relpath(os.path.realpath(dag.fileloc), folder) for dag_id, dag in bag.dags.items()},
}))
"""


def dags_per_file(dag_folder: Path, config_dir: Path) -> dict:
    """Parse ``dag_folder`` with Airflow's DagBag in a fresh interpreter whose config folder is ``config_dir``.

    A subprocess keeps the per-process cached config (``get_config``) of this test session untouched.
    """
    env = {**os.environ, "EVERGREEN_CONFIG_DIR": str(config_dir)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-c", _DAGBAG_SCRIPT, str(dag_folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    files: dict[str, list[str]] = {}
    for dag_id, file in result["dags"].items():
        files.setdefault(file, []).append(dag_id)
    return {"import_errors": result["import_errors"], "files": files}


def assert_one_dag_per_model(dag_folder: Path, config_dir: Path, models: list[str]) -> dict[str, list[str]]:
    parsed = dags_per_file(dag_folder, config_dir)
    assert parsed["import_errors"] == {}, parsed["import_errors"]
    dag_files = sorted(p.name for p in dag_folder.glob("*.py") if not p.name.startswith("_"))
    assert sorted(parsed["files"]) == dag_files, f"files without DAGs: {set(dag_files) - set(parsed['files'])}"
    for file, dag_ids in parsed["files"].items():
        assert len(dag_ids) == len(models), f"{file}: {dag_ids} for models {models}"
        for model in models:
            owners = [d for d in dag_ids if model in d]
            assert len(owners) == 1, f"{file}: expected one DAG id naming model '{model}', got {dag_ids}"
    return parsed["files"]


@pytest.fixture(scope="module")
def two_model_config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two-models")
    _write(folder, "churn.yaml", (SHIPPED / "churn.yaml").read_text())
    _write(folder, "upsell.yaml", MINIMAL)
    return folder


# A tiny DAG file written the project's way (one DAG per model from get_config()): it proves the check below
# works even while dags/ is still empty, and that a file ignoring the config is caught.
_PER_MODEL_DAG = '''
"""Per-model probe DAG."""
from airflow.sdk import dag, task
from evergreen import dag_common
from evergreen.config import get_config

for _model in get_config().models.values():
    @dag(dag_id=f"probe_{_model.name}", schedule=dag_common.daily("0 1 * * *"),
         start_date=dag_common.start_date(_model), catchup=False, tags=["evergreen", _model.name],
         default_args=dag_common.default_args(_model), doc_md=__doc__)
    def _probe():
        @task
        def noop():
            return None
        noop()
    _probe()
'''


def test_per_model_generation_check_on_a_probe_dag(tmp_path, two_model_config):
    good = tmp_path / "good"
    _write(good, "probe.py", _PER_MODEL_DAG)
    files = assert_one_dag_per_model(good, two_model_config, ["churn", "upsell"])
    assert sorted(files["probe.py"]) == ["probe_churn", "probe_upsell"]

    single = tmp_path / "single"
    _write(single, "probe.py", _PER_MODEL_DAG.replace("get_config().models.values()", "[get_config().model('churn')]"))
    with pytest.raises(AssertionError, match="probe.py"):
        assert_one_dag_per_model(single, two_model_config, ["churn", "upsell"])


def test_every_dag_file_generates_one_dag_per_model(two_model_config):
    dag_folder = REPO / "dags"
    if not any(p for p in dag_folder.glob("*.py") if not p.name.startswith("_")):
        pytest.skip("dags/ has no DAG files yet")
    assert_one_dag_per_model(dag_folder, two_model_config, ["churn", "upsell"])


# --- bounded inputs: the estimator allowlist, hyper-parameter values, the training window --------------------------

BOUNDED_INVALID = [
    # (case id, extra model text, field path the message must name, what-is-allowed fragment)
    ("estimator-os-system", "training: {estimator: os.system}\n", "models.upsell.training.estimator: 'os.system' "
     "is not allowed: not a scikit-learn estimator", "platform.allowed_estimators (none listed)"),
    ("estimator-builtins-eval", "training: {estimator: builtins.eval}\n", "models.upsell.training.estimator",
     "expected a scikit-learn classifier such as sklearn.ensemble.RandomForestClassifier"),
    ("estimator-lookalike-package", "training: {estimator: sklearnx.ensemble.Forest}\n",
     "models.upsell.training.estimator: 'sklearnx.ensemble.Forest' is not allowed", "not a scikit-learn estimator"),
    ("estimator-private-module", "training: {estimator: sklearn.ensemble._forest.RandomForestClassifier}\n",
     "models.upsell.training.estimator", "'_forest' is private to scikit-learn; use its public path"),
    ("estimator-not-a-dotted-path", "training: {estimator: 'sklearn.ensemble.RandomForestClassifier()'}\n",
     "models.upsell.training.estimator", "not a dotted path module.Class"),
    ("hyperparameter-nested-value", "training: {hyperparameters: {max_depth: {__class__: os.system}}}\n",
     "models.upsell.training.hyperparameters.max_depth: {'__class__': 'os.system'} is not allowed",
     "expected a string, number, boolean or null, or a flat list of those"),
    ("hyperparameter-bad-name", "training: {hyperparameters: {max-depth: 3}}\n",
     "models.upsell.training.hyperparameters.max-depth: not a parameter name", "an identifier such as max_depth"),
    ("training-window-zero", "retrain: {training_window_days: 0}\n",
     "models.upsell.retrain.training_window_days: 0 is not allowed", "from 1 to 3650"),
    ("training-window-too-long", "retrain: {training_window_days: 3651}\n",
     "models.upsell.retrain.training_window_days: 3651 is not allowed", "from 1 to 3650"),
]


@pytest.mark.parametrize(("extra", "field_path", "allowed"), [c[1:] for c in BOUNDED_INVALID],
                         ids=[c[0] for c in BOUNDED_INVALID])
def test_unbounded_input_names_file_field_and_what_is_allowed(tmp_path, extra, field_path, allowed):
    path = _write(tmp_path, "upsell.yaml", _model_case(extra))
    message = _error(tmp_path)
    assert message.startswith(f"{path}: "), message
    assert field_path in message, message
    assert allowed in message, message


def test_estimator_outside_scikit_learn_loads_only_when_the_platform_lists_it(tmp_path):
    model = _write(tmp_path, "upsell.yaml", _model_case("training: {estimator: xgboost.XGBClassifier}\n"))
    assert "models.upsell.training.estimator: 'xgboost.XGBClassifier' is not allowed" in _error(tmp_path)
    # the platform block may live in another file, loaded before or after the model's
    _write(tmp_path, "platform.yaml",
           "platform: {allowed_estimators: [xgboost.XGBClassifier, lightgbm.LGBMClassifier]}\n")
    config = load_config(tmp_path)
    assert config.platform.allowed_estimators == ("xgboost.XGBClassifier", "lightgbm.LGBMClassifier")
    upsell = config.model("upsell")
    assert (upsell.training.estimator, upsell.source) == ("xgboost.XGBClassifier", str(model))
    # the training steps load one model: it carries the platform's list, and a model block cannot set it
    assert upsell.platform_estimators == config.platform.allowed_estimators
    _write(tmp_path, "upsell.yaml", _model_case("platform_estimators: [os.system]\n"))
    assert "models.upsell: unknown field 'platform_estimators'" in _error(tmp_path)


def test_allowed_estimator_entry_must_be_a_dotted_path(tmp_path):
    path = _write(tmp_path, "upsell.yaml", MINIMAL + "platform: {allowed_estimators: ['xgboost.XGBClassifier; rm']}\n")
    message = _error(tmp_path)
    assert message.startswith(f"{path}: platform.allowed_estimators[0]: 'xgboost.XGBClassifier; rm' is not allowed")
    assert "expected a dotted path module.Class" in message


def test_flat_hyperparameter_values_load(tmp_path):
    _write(tmp_path, "upsell.yaml", _model_case(
        "training: {estimator: sklearn.neural_network.MLPClassifier,\n"
        "           hyperparameters: {hidden_layer_sizes: [16, 8], alpha: 0.001, activation: relu, verbose: false}}\n"))
    assert load_config(tmp_path).model("upsell").training.hyperparameters["hidden_layer_sizes"] == [16, 8]


def test_hyperparameter_rule_and_param_schema_agree():
    """The config rule and the retrain Param's JSON schema are one rule written twice; they accept the same values."""
    import jsonschema

    from evergreen.config import HYPERPARAMETERS_SCHEMA, hyperparameter_problem

    cases = [{"max_depth": 3}, {"alpha": 0.5}, {"criterion": "gini"}, {"verbose": True}, {"max_features": None},
             {"hidden_layer_sizes": [16, 8]}, {"max_depth": {"a": 1}}, {"x": [[1]]}, {"x": [1, {"a": 1}]},
             {"max-depth": 1}, {"1x": 1}, {"__class__": 1}]
    for case in cases:
        ((name, value),) = case.items()
        by_rule = hyperparameter_problem(name, value) is None
        by_schema = jsonschema.Draft202012Validator(HYPERPARAMETERS_SCHEMA).is_valid(case)
        assert by_rule == by_schema, case


def test_holdout_is_a_number_of_days_of_the_training_window():
    """training.holdout_days (the window's last days, held out) replaced the hash split's holdout_fraction."""
    from evergreen.config import TrainingSpec, get_config

    assert TrainingSpec().holdout_days == 7
    assert not hasattr(TrainingSpec(), "holdout_fraction")
    churn = get_config().model("churn")
    assert churn.training.holdout_days == 1 < churn.retrain.training_window_days


def test_end_date_ends_the_daily_schedules_and_must_follow_the_start(tmp_path):
    from evergreen.dag_common import end_date

    folder = tmp_path / "ok"
    _write(folder, "m.yaml", MINIMAL.replace("  upsell:\n", "  upsell:\n    start_date: 2026-10-01\n"
                                                          "    end_date: 2026-10-31\n"))
    model = load_config(folder).model("upsell")
    assert end_date(model) == dt.datetime(2026, 10, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
    assert end_date(load_config(SHIPPED).model("churn")) is None  # the shipped model runs on
    bad = tmp_path / "bad"
    _write(bad, "m.yaml", MINIMAL.replace("  upsell:\n", "  upsell:\n    start_date: 2026-10-01\n"
                                                        "    end_date: 2026-09-30\n"))
    assert "end_date: 2026-09-30 is before start_date 2026-10-01" in _error(bad)
