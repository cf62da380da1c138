"""The local Kubeflow runner's own logic, without running a pipeline (the operator's DAG runs through it are in
test_kubeflow.py)."""

from __future__ import annotations

from evergreen.operators.kfp_local import component_error


def test_component_error_is_the_last_traceback_line_with_its_continuation():
    log = [
        "    [KFP Executor 2026-11-26 05:00:00,000 INFO]: Looking for component `prepare`",
        "    Traceback (most recent call last):",
        '      File "x.py", line 3, in prepare',
        "        raise KeyError('dt')",
        "    KeyError: 'dt'",
        "    ",
        "    During handling of the above exception, another exception occurred:",
        "    ",
        "    Traceback (most recent call last):",
        '      File "x.py", line 5, in prepare',
        "        raise TrainingDataError(msg)",
        "    evergreen.train.data.TrainingDataError: partition dt=2026-11-03: column(s) plan missing",
        "    expected: request_id, label, plan",
        "    ",
        "\x1b[91mFAILURE\x1b[0m",
    ]
    assert component_error(log) == (
        "evergreen.train.data.TrainingDataError: partition dt=2026-11-03: column(s) plan missing\n"
        "expected: request_id, label, plan"
    )
    assert component_error(["no traceback here"]) is None
